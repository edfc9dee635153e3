//! Publishing telemetry: turning the outbox's next message into an MQTT PUBLISH on the telemetry
//! topic, or into an upload first when its payload travels as a blob.
//!
//! This module owns that decision and a message's wire form: the property bag with its
//! `vdev-seq=<origin>.<seq>` tag, the topic (from [`iothub`](crate::iothub)), and the
//! `{"link": <blob>}` body of an uploaded payload. The outbox owns order and outcomes, the
//! session the QoS 1 window, the upload its HTTP steps; the facade lends them here for one call.

use crate::prelude::*;

use crate::backoff::BackoffConfig;
use crate::iothub::telemetry_topic;
use crate::json::Value;
use crate::keyed::KeyedVec;
use crate::mqtt::session::Session;
use crate::outbox::{Outbox, Publishable, RejectReason};
use crate::property_bag::encode_property_bag;
use crate::store::Seq;
use crate::text::Describe;
use crate::upload::Upload;

/// What publishing needs from the facade, borrowed for one [`Publisher::publish_ready`].
pub(crate) struct Publisher<'a> {
    pub(crate) session: &'a mut Session,
    pub(crate) outbox: &'a mut Outbox,
    /// The sequence number of each publish waiting for its PUBACK, by packet id.
    pub(crate) in_flight: &'a mut KeyedVec<Seq>,
    /// The one upload under way, if any.
    pub(crate) upload: &'a mut Option<Upload>,
    pub(crate) workspace_id: &'a str,
    pub(crate) device_id: &'a str,
    /// The backoff of a new upload.
    pub(crate) backoff: BackoffConfig,
}

impl Publisher<'_> {
    /// Publishes queued messages while the session has room, in order. A message whose payload
    /// must be uploaded first starts the upload (one at a time) and holds back those after it.
    /// True when something changed.
    pub(crate) fn publish_ready(self, now: u64) -> bool {
        let mut progressed = false;
        while self.session.can_publish() {
            let Some(next) = self.outbox.next_publishable() else {
                break;
            };
            let seq = next.seq;
            if next.message.externalize && next.uploaded.is_none() {
                if self.upload.is_none() {
                    let payload = next.message.payload.clone();
                    *self.upload = Some(Upload::new(
                        now,
                        seq,
                        self.outbox.origin(),
                        payload,
                        self.backoff,
                    ));
                    progressed = true;
                }
                break;
            }
            let dup = next.dup;
            let (topic, payload) = self.wire_form(&next);
            match self.session.publish(now, topic, payload, dup) {
                Ok(packet_id) => {
                    self.in_flight.insert(u64::from(packet_id), seq);
                    self.outbox.mark_in_flight(seq);
                }
                Err(error) => self
                    .outbox
                    .reject(seq, RejectReason::Unencodable(error.text())),
            }
            progressed = true;
        }
        progressed
    }

    /// The topic and payload `next` is published with.
    fn wire_form(&self, next: &Publishable<'_>) -> (String, Vec<u8>) {
        let seq_tag = text!(self.outbox.origin(), '.', next.seq);
        let externalized = next.uploaded.is_some();
        let bag = encode_property_bag(&next.message.wire_properties(externalized, &seq_tag));
        let topic = telemetry_topic(self.workspace_id, self.device_id, &bag);
        let payload = match next.uploaded {
            Some(blob) => Value::object([("link", blob.into())])
                .to_json()
                .into_bytes(),
            None => next.message.payload.clone(),
        };
        (topic, payload)
    }
}
