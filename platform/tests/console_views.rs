//! What the technician console's charts and paged message view ask of the admin API: a device's
//! messages per second over a recent window, and pages of its messages back from the newest
//! (`order=desc&beforeId=`) and forward again (`afterId=`).

mod common;

use common::{Mqtt, TestPlatform};
use reqwest::StatusCode;
use rumqttc::ConnectReturnCode;
use serde_json::Value;

fn counters(page: &Value) -> Vec<u64> {
    page.as_array()
        .expect("message list")
        .iter()
        .map(|m| {
            m["payloadText"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("a numbered payload")
        })
        .collect()
}

fn ids(page: &Value) -> Vec<i64> {
    page.as_array()
        .expect("message list")
        .iter()
        .map(|m| m["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn the_message_rate_counts_one_devices_messages_per_second_and_pages_walk_both_ways() {
    let platform = TestPlatform::start().await;
    let (host, port) = platform.mqtt_tcp();
    let counted = platform.provision("rate-01").await;
    let other = platform.provision("rate-02").await;
    let mut mqtt = Mqtt::spawn(counted.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    let mut other_mqtt = Mqtt::spawn(other.options(&host, port));
    assert_eq!(other_mqtt.connack().await, Ok(ConnectReturnCode::Success));

    const SENT: u64 = 23;
    for n in 1..=SENT {
        mqtt.publish_message(
            counted.events_topic(&format!("vdev-seq=r.{n}")),
            n.to_string().into_bytes(),
        )
        .await;
    }
    // Another device's messages are not counted.
    for n in 1..=5u64 {
        other_mqtt
            .publish_message(
                other.events_topic(&format!("vdev-seq=r.{n}")),
                n.to_string().into_bytes(),
            )
            .await;
    }

    let (status, rate) = platform
        .admin("GET", "/devices/rate-01/message-rate", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{rate}");
    assert_eq!(rate["deviceId"], "rate-01");
    assert_eq!(rate["bucketSeconds"], 1);
    let counts: Vec<u64> = rate["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|c| c.as_u64().expect("a count"))
        .collect();
    assert_eq!(
        counts.len(),
        60,
        "one bucket per second of the default minute"
    );
    assert_eq!(counts.iter().sum::<u64>(), SENT, "{counts:?}");
    assert_eq!(rate["total"], SENT);
    // Just sent: within the last few seconds of the window, not at its start.
    assert!(counts[..50].iter().all(|&c| c == 0), "{counts:?}");
    let from_ms = rate["fromMs"].as_i64().expect("fromMs");
    assert_eq!(from_ms % 1000, 0, "buckets are whole seconds");

    let (status, short) = platform
        .admin("GET", "/devices/rate-01/message-rate?seconds=120", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{short}");
    assert_eq!(short["counts"].as_array().map(Vec::len), Some(120));
    assert_eq!(short["total"], SENT);

    let (status, none) = platform
        .admin("GET", "/devices/never-seen/message-rate", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(none["total"], 0);

    for refused in ["seconds=0", "seconds=3601", "seconds=many", "window=60"] {
        let (status, body) = platform
            .admin(
                "GET",
                &format!("/devices/rate-01/message-rate?{refused}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}: {body}");
    }

    // Pages of 10, newest first, back to the oldest: 23..14, 13..4, 3..1.
    let page = |query: String| {
        let platform = &platform;
        async move {
            let (status, body) = platform
                .admin("GET", &format!("/messages?deviceId=rate-01&{query}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            body
        }
    };
    let newest = page("order=desc&limit=10".into()).await;
    assert_eq!(counters(&newest), (14..=23).rev().collect::<Vec<_>>());
    let older = page(format!(
        "order=desc&limit=10&beforeId={}",
        ids(&newest).last().unwrap()
    ))
    .await;
    assert_eq!(counters(&older), (4..=13).rev().collect::<Vec<_>>());
    let oldest = page(format!(
        "order=desc&limit=10&beforeId={}",
        ids(&older).last().unwrap()
    ))
    .await;
    assert_eq!(counters(&oldest), vec![3, 2, 1]);
    let before_first = page(format!(
        "order=desc&limit=10&beforeId={}",
        ids(&oldest).last().unwrap()
    ))
    .await;
    assert_eq!(counters(&before_first), Vec::<u64>::new());
    // And forward again from the oldest page: the same middle page.
    let newer = page(format!(
        "order=asc&limit=10&afterId={}",
        ids(&oldest).first().unwrap()
    ))
    .await;
    assert_eq!(counters(&newer), (4..=13).collect::<Vec<_>>());
}
