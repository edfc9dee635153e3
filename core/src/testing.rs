//! The wire-level pieces the core's own tests and simulator build Platform answers with: the
//! MQTT packet codec, the property bag, the timestamp and time-span formats, the connection
//! string, merge-patch diffs and `Retry-After`; and the core's random generator, which the
//! simulator draws its worlds from. Apps and hosts never need them (they talk to the
//! core through [`Device`](crate::Device)), so they are public only with the `testing` feature,
//! which the crate's tests turn on through their dev-dependency on the crate itself.

pub use crate::connection_string::{ConnectionString, ConnectionStringError};
pub use crate::json::merge::merge_patch_diff;
pub use crate::mqtt::codec as mqtt;
pub use crate::property_bag::{PropertyBagError, decode_property_bag, encode_property_bag};
pub use crate::retry_after::{MAX_RETRY_AFTER_MS, parse_retry_after};
pub use crate::rng::{Rng as Xoshiro256, splitmix64};
pub use crate::timespan::{TimeSpanError, format_timespan, parse_timespan};
pub use crate::timestamp::{TimestampError, format_rfc3339, parse_rfc3339};
