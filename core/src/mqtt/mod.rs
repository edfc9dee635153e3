//! MQTT 3.1.1: the packet codec and the client session that uses it.

pub mod codec;
pub(crate) mod session;
