//! Large messages: the three-step HTTP upload of a payload too big for MQTT, after which a
//! small link message takes its place in the order.
//!
//! Steps (docs/wire-contract.md, "Large messages"): ask the Platform for an upload slot
//! (`POST .../files`), `PUT` the bytes to the blob URL it returns, notify the Platform
//! (`POST .../files/notifications`). Transient failures retry the failed step with backoff; a 401
//! asks for a fresh credential first; a final refusal rejects the message. The blob name is
//! derived from the outbox origin and the sequence number, so a retry after a crash overwrites
//! the same blob instead of leaving orphans.

use crate::prelude::*;

use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::Clock;
use crate::http::{HttpCall, HttpResponse, Method, Verdict, classify};
use crate::json::{self, Value};
use crate::reason::{RequestFailure, RequestKind};
use crate::rng::Rng;
use crate::store::Seq;
use crate::token::ConnectionInfo;

/// The Platform's answer to an upload request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    correlation_id: String,
    host_name: String,
    container_name: String,
    blob_name: String,
    sas_token: String,
    /// A stand-in Platform's direct upload URL.
    upload_url: Option<String>,
}

impl Slot {
    fn parse(body: &[u8]) -> Result<Self, String> {
        let object = json::parse_object(body)?;
        Ok(Self {
            correlation_id: json::string(&object, "correlationId")?,
            host_name: json::string(&object, "hostName")?,
            container_name: json::string(&object, "containerName")?,
            blob_name: json::string(&object, "blobName")?,
            sas_token: json::string(&object, "sasToken")?,
            upload_url: json::optional_string(&object, "uploadUrl")?,
        })
    }

    fn blob_url(&self) -> String {
        self.upload_url.clone().unwrap_or_else(|| {
            text!(
                "https://",
                self.host_name,
                '/',
                self.container_name,
                '/',
                self.blob_name,
                self.sas_token
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Request { at: u64 },
    RequestSent,
    Put { at: u64, slot: Slot },
    PutSent { slot: Slot },
    Notify { at: u64, slot: Slot },
    NotifySent { slot: Slot },
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UploadEvent {
    /// The payload is stored as this blob; publish the link.
    Uploaded { seq: Seq, blob_name: String },
    /// The Platform refused the upload for good, on this step.
    Refused {
        seq: Seq,
        request: RequestKind,
        failure: RequestFailure,
    },
    /// The credential was refused: get a new one, the upload waits.
    NeedsCredentials,
}

#[derive(Debug)]
pub(crate) struct Upload {
    seq: Seq,
    blob_name: String,
    payload: Vec<u8>,
    step: Step,
    backoff: Backoff,
    call: Option<HttpCall>,
    events: Vec<UploadEvent>,
}

const API_VERSION: &str = "api-version=2020-03-13";

impl Upload {
    pub(crate) fn new(
        now: u64,
        seq: Seq,
        origin: &str,
        payload: Vec<u8>,
        backoff: BackoffConfig,
    ) -> Self {
        Self {
            seq,
            blob_name: text!(origin, '-', seq),
            payload,
            step: Step::Request { at: now },
            backoff: Backoff::new(backoff),
            call: None,
            events: Vec::new(),
        }
    }

    pub(crate) fn seq(&self) -> Seq {
        self.seq
    }

    /// Makes the next call when it is due and a usable credential exists.
    pub(crate) fn handle_timeout(&mut self, now: u64, connection: Option<&ConnectionInfo>) {
        let Some(connection) = connection.filter(|c| !c.is_expired(now)) else {
            return;
        };
        let device = connection.client_id();
        let base = connection.upload_base();
        let auth = (
            "Authorization".to_owned(),
            connection.shared_access_signature.clone(),
        );
        let json = ("Content-Type".to_owned(), "application/json".to_owned());
        match self.step.clone() {
            Step::Request { at } if at <= now => {
                self.call = Some(HttpCall {
                    kind: RequestKind::UploadSlot,
                    method: Method::Post,
                    url: text!(base, "/devices/", device, "/files?", API_VERSION),
                    headers: vec![auth, json],
                    body: Value::object([("blobName", self.blob_name.as_str().into())])
                        .to_json()
                        .into_bytes(),
                });
                self.step = Step::RequestSent;
            }
            Step::Put { at, slot } if at <= now => {
                self.call = Some(HttpCall {
                    kind: RequestKind::UploadBlob,
                    method: Method::Put,
                    url: slot.blob_url(),
                    headers: vec![("x-ms-blob-type".into(), "BlockBlob".into())],
                    body: self.payload.clone(),
                });
                self.step = Step::PutSent { slot };
            }
            Step::Notify { at, slot } if at <= now => {
                self.call = Some(HttpCall {
                    kind: RequestKind::UploadNotify,
                    method: Method::Post,
                    url: text!(
                        base,
                        "/devices/",
                        device,
                        "/files/notifications?",
                        API_VERSION
                    ),
                    headers: vec![auth, json],
                    body: Value::object([
                        ("correlationId", slot.correlation_id.as_str().into()),
                        ("isSuccess", true.into()),
                        ("statusCode", 201u16.into()),
                        ("statusDescription", "uploaded".into()),
                    ])
                    .to_json()
                    .into_bytes(),
                });
                self.step = Step::NotifySent { slot };
            }
            _ => {}
        }
    }

    /// Takes the answer to the step in flight. `Err`: it was a success whose body could not be
    /// read (the step is made again after a delay), for the app to hear why.
    pub(crate) fn handle_response(
        &mut self,
        clock: Clock,
        rng: &mut Rng,
        response: Result<HttpResponse, RequestFailure>,
    ) -> Result<(), String> {
        let now = clock.now();
        let verdict = classify(&response, clock.wall_now());
        let mut unreadable = Ok(());
        let body = response.map(|r| r.body).unwrap_or_default();
        let step = core::mem::replace(&mut self.step, Step::Finished);
        let mut retry_at = |this: &mut Self, retry_after: Option<u64>| {
            now + this.backoff.next_delay(rng, retry_after)
        };
        self.step = match (step, verdict) {
            (Step::RequestSent, Verdict::Success) => match Slot::parse(&body) {
                Ok(slot) => {
                    self.backoff.reset();
                    Step::Put { at: now, slot }
                }
                Err(text) => {
                    unreadable = Err(text);
                    Step::Request {
                        at: retry_at(self, None),
                    }
                }
            },
            (Step::PutSent { slot }, Verdict::Success) => {
                self.backoff.reset();
                Step::Notify { at: now, slot }
            }
            (Step::NotifySent { .. }, Verdict::Success) => {
                self.events.push(UploadEvent::Uploaded {
                    seq: self.seq,
                    blob_name: self.blob_name.clone(),
                });
                Step::Finished
            }
            (step, Verdict::Unauthorized(_)) => {
                self.events.push(UploadEvent::NeedsCredentials);
                let at = retry_at(self, None);
                restart(step, at)
            }
            (step, Verdict::Rejected(failure)) => {
                self.events.push(UploadEvent::Refused {
                    seq: self.seq,
                    request: step.request(),
                    failure,
                });
                Step::Finished
            }
            (step, Verdict::RetryLater { retry_after_ms }) => {
                let at = retry_at(self, retry_after_ms);
                restart(step, at)
            }
            (step, _) => {
                let at = retry_at(self, None);
                restart(step, at)
            }
        };
        unreadable
    }

    #[must_use]
    pub(crate) fn poll_call(&mut self) -> Option<HttpCall> {
        self.call.take()
    }

    #[must_use]
    pub(crate) fn poll_event(&mut self) -> Option<UploadEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        match &self.step {
            Step::Request { at } | Step::Put { at, .. } | Step::Notify { at, .. } => Some(*at),
            _ => None,
        }
    }
}

impl Step {
    /// The request a step makes (or made).
    fn request(&self) -> RequestKind {
        match self {
            Step::Put { .. } | Step::PutSent { .. } => RequestKind::UploadBlob,
            Step::Notify { .. } | Step::NotifySent { .. } => RequestKind::UploadNotify,
            _ => RequestKind::UploadSlot,
        }
    }
}

/// The step to retry after a failure of `sent`.
fn restart(sent: Step, at: u64) -> Step {
    match sent {
        Step::PutSent { slot } => Step::Put { at, slot },
        Step::NotifySent { slot } => Step::Notify { at, slot },
        _ => Step::Request { at },
    }
}
