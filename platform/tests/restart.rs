//! An embedded Platform stopped and started again on the same ports and data directory: what a
//! device test sees when "the Platform restarts in the middle".

mod common;

use common::{Device, Mqtt, TestPlatform};
use rumqttc::ConnectReturnCode;
use vdev_platform::{Config, Platform};

#[tokio::test]
async fn restarting_on_the_same_ports_keeps_tokens_devices_and_sequences() {
    let first = TestPlatform::start().await;
    let device: Device = first.provision("restart-01").await;
    let info = first.platform.info().clone();
    let (host, port) = first.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    mqtt.publish_message(device.events_topic("vdev-seq=r.1"), b"one".to_vec())
        .await;

    let TestPlatform {
        platform,
        dir,
        http,
    } = first;
    let http_addr = info
        .http_url
        .as_deref()
        .and_then(|u| u.strip_prefix("http://"))
        .expect("http")
        .parse()
        .expect("addr");
    let mqtt_addr = info
        .gateway_endpoints
        .mqtt_tcp
        .as_deref()
        .expect("tcp")
        .parse()
        .expect("addr");
    platform.shutdown().await;
    assert!(
        mqtt.next_matching(|_| None::<()>).await.is_err(),
        "sessions end with the Platform"
    );

    let config = Config {
        http: Some(http_addr),
        mqtt_tcp: Some(mqtt_addr),
        ..Config::ephemeral(dir.path())
    };
    let platform = Platform::start(config)
        .await
        .expect("restarts on the same ports");
    let second = TestPlatform {
        platform,
        dir,
        http,
    };
    assert_eq!(second.platform.info().admin_token, info.admin_token);
    assert_eq!(
        second.platform.info().gateway_endpoints.mqtt_tcp,
        info.gateway_endpoints.mqtt_tcp
    );
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(
        mqtt.connack().await,
        Ok(ConnectReturnCode::Success),
        "the old credential still works"
    );
    mqtt.publish_message(device.events_topic("vdev-seq=r.1"), b"one".to_vec())
        .await;
    mqtt.publish_message(device.events_topic("vdev-seq=r.2"), b"two".to_vec())
        .await;
    let (_, stored) = second
        .admin("GET", "/devices/restart-01/messages", None)
        .await;
    let payloads: Vec<&str> = stored
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["payloadText"].as_str())
        .collect();
    assert_eq!(payloads, ["one", "two"]);
}
