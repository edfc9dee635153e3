//! The twin's wire format: every `$iothub/twin/...` topic the twin publishes or receives, built
//! and parsed, and the bodies that arrive on them.
//!
//! The device asks for the whole twin on `$iothub/twin/GET/?$rid=<rid>` and sends reported
//! patches on `$iothub/twin/PATCH/properties/reported/?$rid=<rid>`; the Platform answers both on
//! `$iothub/twin/res/<status>/?$rid=<rid>[&$version=<n>]` and pushes desired patches on
//! `$iothub/twin/PATCH/properties/desired/?$version=<n>`. Query parameters are also read
//! percent-encoded (`%24version`). Nothing here fails loudly: what does not parse is `None` (or
//! [`TwinTopic::Ignored`]), and the twin decides what that means.

use crate::prelude::*;

use crate::json::{Map, Value};

const TWIN_TOPIC_PREFIX: &str = "$iothub/twin/";
const RESPONSE_TOPIC: &str = "res/";
const DESIRED_PATCH_TOPIC: &str = "PATCH/properties/desired";
pub(super) const GET_TOPIC_PREFIX: &str = "$iothub/twin/GET/?$rid=";
const REPORTED_PATCH_TOPIC_PREFIX: &str = "$iothub/twin/PATCH/properties/reported/?$rid=";

/// Keys the Platform adds to twin documents; they are not properties.
pub(super) const VERSION_KEY: &str = "$version";
const METADATA_KEY: &str = "$metadata";

/// A publish on a twin topic, as the twin reads it.
#[derive(Debug)]
pub(super) enum TwinTopic<'a> {
    /// `$iothub/twin/res/...`: the answer to a request.
    Response(Response),
    /// `$iothub/twin/PATCH/properties/desired...`: a desired patch; the topic after
    /// `$iothub/twin/PATCH/properties/desired`, for [`parse_desired_patch`].
    DesiredPatch(&'a str),
    /// Another twin topic, or an answer whose topic does not parse: nothing to do.
    Ignored,
}

/// Reads `topic`; `None` when it is not a twin topic (`$iothub/twin/...`).
pub(super) fn parse_topic(topic: &str) -> Option<TwinTopic<'_>> {
    let twin_topic = topic.strip_prefix(TWIN_TOPIC_PREFIX)?;
    let parsed = if let Some(rest) = twin_topic.strip_prefix(RESPONSE_TOPIC) {
        parse_response_topic(rest).map_or(TwinTopic::Ignored, TwinTopic::Response)
    } else if let Some(rest) = twin_topic.strip_prefix(DESIRED_PATCH_TOPIC) {
        TwinTopic::DesiredPatch(rest)
    } else {
        TwinTopic::Ignored
    };
    Some(parsed)
}

/// The topic of a full GET with request id `rid`.
pub(super) fn get_topic(rid: u64) -> String {
    text!(GET_TOPIC_PREFIX, rid)
}

/// The topic of a reported-properties patch with request id `rid`.
pub(super) fn reported_patch_topic(rid: u64) -> String {
    text!(REPORTED_PATCH_TOPIC_PREFIX, rid)
}

/// A full twin document as answered to a GET, with the Platform's keys taken out.
#[derive(Debug)]
pub(super) struct TwinDocument {
    pub(super) desired: Value,
    pub(super) desired_version: u64,
    pub(super) reported: Value,
    pub(super) reported_version: Option<u64>,
}

/// A parsed `$iothub/twin/res/<status>/?$rid=<rid>[&$version=<n>]` topic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Response {
    /// `None` when the status is not a number.
    pub(super) status: Option<u16>,
    pub(super) rid: u64,
    pub(super) version: Option<u64>,
}

/// The value of query parameter `$name` (also accepted percent-encoded as `%24name`).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = key.strip_prefix('$').or_else(|| key.strip_prefix("%24"))?;
        (key == name).then_some(value)
    })
}

/// Parses what follows `$iothub/twin/res/`: `<status>/?$rid=<rid>[&...]`.
fn parse_response_topic(rest: &str) -> Option<Response> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let status = path.strip_suffix('/').unwrap_or(path).parse().ok();
    let rid = query_param(query, "rid")?.parse().ok()?;
    let version = query_param(query, "version").and_then(|version| version.parse().ok());
    Some(Response {
        status,
        rid,
        version,
    })
}

/// Parses a desired patch: what follows `$iothub/twin/PATCH/properties/desired` in the topic
/// (`/?$version=<n>`) and the body. The version comes from the topic, or from the body's
/// `$version` when the topic lacks it; when both are present they must agree.
pub(super) fn parse_desired_patch(rest: &str, payload: &[u8]) -> Option<(u64, Value)> {
    let query = rest.split_once('?').map_or("", |(_, query)| query);
    let topic_version = match query_param(query, "version") {
        Some(version) => Some(version.parse::<u64>().ok()?),
        None => None,
    };
    let Value::Object(mut patch) = Value::parse(payload).ok()? else {
        return None;
    };
    let body_version = match patch.remove(VERSION_KEY) {
        Some(version) => Some(version.as_u64()?),
        None => None,
    };
    patch.remove(METADATA_KEY);
    let version = match (topic_version, body_version) {
        (Some(topic), Some(body)) if topic != body => return None,
        (version, None) | (None, version) => version?,
        (Some(topic), Some(_)) => topic,
    };
    Some((version, Value::Object(patch)))
}

/// Parses a GET answer body: `{"desired":{..,"$version":n},"reported":{..,"$version":m}}`.
/// A missing `reported` is read as empty; a missing desired version makes the answer junk.
pub(super) fn parse_twin_document(payload: &[u8]) -> Option<TwinDocument> {
    let Value::Object(mut root) = Value::parse(payload).ok()? else {
        return None;
    };
    let Some(Value::Object(mut desired)) = root.remove("desired") else {
        return None;
    };
    let desired_version = desired.remove(VERSION_KEY)?.as_u64()?;
    desired.remove(METADATA_KEY);
    let mut reported = match root.remove("reported") {
        Some(Value::Object(reported)) => reported,
        None => Map::new(),
        Some(_) => return None,
    };
    let reported_version = reported
        .remove(VERSION_KEY)
        .and_then(|version| version.as_u64());
    reported.remove(METADATA_KEY);
    Some(TwinDocument {
        desired: Value::Object(desired),
        desired_version,
        reported: Value::Object(reported),
        reported_version,
    })
}
