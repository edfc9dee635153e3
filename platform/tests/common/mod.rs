//! Helpers shared by the Platform's integration tests: an embedded Platform on ephemeral
//! loopback ports in a temp dir, admin and device HTTP clients, provisioning shortcuts and an
//! independent MQTT client (rumqttc) driven in the background.

#![allow(dead_code)]

use std::time::Duration;

use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Transport};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vdev_platform::{Config, Platform, RunningPlatform};

/// Bound of every wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running Platform with its temp dir.
pub struct TestPlatform {
    pub platform: RunningPlatform,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl TestPlatform {
    pub async fn start() -> Self {
        Self::start_with(|c| c).await
    }

    pub async fn start_with(adjust: impl FnOnce(Config) -> Config) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let platform = Platform::start(adjust(Config::ephemeral(dir.path())))
            .await
            .expect("platform starts");
        Self {
            platform,
            dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn base(&self) -> String {
        self.platform
            .info()
            .http_url
            .clone()
            .expect("http listener")
    }

    pub fn workspace(&self) -> String {
        self.platform.info().workspace_id.clone()
    }

    pub fn provisioning_token(&self) -> String {
        self.platform.info().provisioning_token.clone()
    }

    pub fn mqtt_tcp(&self) -> (String, u16) {
        let endpoint = self
            .platform
            .info()
            .gateway_endpoints
            .mqtt_tcp
            .clone()
            .expect("mqtt tcp");
        let (host, port) = endpoint.rsplit_once(':').expect("host:port");
        (host.to_owned(), port.parse().expect("port"))
    }

    /// Admin call on the default workspace: (status, body).
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}/workspaces/{}{path}", self.base(), self.workspace());
        self.admin_url(method, &url, body).await
    }

    pub async fn admin_url(
        &self,
        method: &str,
        url: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.platform.info().admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_parts(request.send().await.expect("admin request")).await
    }

    /// Device call: (status, body).
    pub async fn device(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = self
            .http
            .request(method, format!("{}{path}", self.base()))
            .header("Authorization", format!("DeviceToken {token}"))
            .json(&body)
            .send()
            .await
            .expect("device request");
        into_parts(response).await
    }

    /// Create a Provisioning Token with options; returns (status, body).
    pub async fn create_token(&self, options: Value) -> (StatusCode, Value) {
        let mut body = json!({"name": "test"});
        if let (Some(b), Some(o)) = (body.as_object_mut(), options.as_object()) {
            b.extend(o.clone());
        }
        self.admin("POST", "/provisioning-tokens", Some(body)).await
    }

    /// init → operation id.
    pub async fn init(&self, token: &str, device_id: Option<&str>) -> (StatusCode, Value) {
        let body = match device_id {
            Some(id) => json!({"deviceId": id}),
            None => json!({}),
        };
        self.device("POST", "/provisioning-operations/init", token, body)
            .await
    }

    pub async fn complete(&self, token: &str, operation: &str) -> (StatusCode, Value) {
        self.device(
            "PUT",
            "/provisioning-operations/complete",
            token,
            json!({"provisioningOperationId": operation}),
        )
        .await
    }

    pub async fn approve(&self, body: Value) -> (StatusCode, Value) {
        self.admin("PUT", "/provisioning-operations/approve", Some(body))
            .await
    }

    pub async fn register(&self, registration_token: &str) -> (StatusCode, Value) {
        self.device(
            "PUT",
            "/devices/register",
            registration_token,
            json!({"connectionStringType": "SharedAccessSignature"}),
        )
        .await
    }

    /// Provision a device with the default token: init, approve, complete, register.
    pub async fn provision(&self, device_id: &str) -> Device {
        let pt = self.provisioning_token();
        let (status, op) = self.init(&pt, Some(device_id)).await;
        assert_eq!(status, StatusCode::OK, "{op}");
        let op_id = op["provisioningOperationId"]
            .as_str()
            .expect("op id")
            .to_owned();
        let (status, body) = self
            .approve(json!({"provisioningOperationId": op_id}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, rt) = self.complete(&pt, &op_id).await;
        assert_eq!(status, StatusCode::OK, "{rt}");
        let registration_token = rt["registrationToken"].as_str().expect("rt").to_owned();
        let (status, registration) = self.register(&registration_token).await;
        assert_eq!(status, StatusCode::OK, "{registration}");
        Device::from_registration(&registration, registration_token)
    }
}

async fn into_parts(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

/// A registered device's MQTT credentials.
#[derive(Debug, Clone)]
pub struct Device {
    pub workspace_id: String,
    pub device_id: String,
    pub sas: String,
    pub host: String,
    pub registration_token: String,
    pub registration: Value,
}

impl Device {
    pub fn from_registration(registration: &Value, registration_token: String) -> Self {
        let connection_string = registration["connectionString"]
            .as_str()
            .expect("connection string");
        let sas = connection_string
            .split(';')
            .find_map(|p| p.strip_prefix("SharedAccessSignature="))
            .expect("sas")
            .to_owned();
        Self {
            workspace_id: registration["workspaceId"].as_str().expect("ws").to_owned(),
            device_id: registration["deviceId"].as_str().expect("dev").to_owned(),
            sas,
            host: registration["iotHubHostName"]
                .as_str()
                .expect("host")
                .to_owned(),
            registration_token,
            registration: registration.clone(),
        }
    }

    pub fn client_id(&self) -> String {
        format!("{}:{}", self.workspace_id, self.device_id)
    }

    pub fn username(&self) -> String {
        format!("{}/{}/?api-version=2018-06-30", self.host, self.client_id())
    }

    pub fn events_topic(&self, bag: &str) -> String {
        format!("devices/{}/messages/events/{bag}", self.client_id())
    }

    pub fn options(&self, host: &str, port: u16) -> MqttOptions {
        let mut options = MqttOptions::new(self.client_id(), host, port);
        options.set_credentials(self.username(), self.sas.clone());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }
}

/// An MQTT client whose event loop runs in the background and reports incoming packets.
pub struct Mqtt {
    pub client: AsyncClient,
    pub incoming: mpsc::UnboundedReceiver<Result<Packet, String>>,
}

impl Mqtt {
    pub fn spawn(options: MqttOptions) -> Self {
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(drive(eventloop, tx));
        Self { client, incoming }
    }

    pub fn spawn_websocket(device: &Device, url: &str, port: u16) -> Self {
        let mut options = MqttOptions::new(device.client_id(), url, port);
        options.set_credentials(device.username(), device.sas.clone());
        options.set_transport(Transport::Ws);
        Self::spawn(options)
    }

    /// Wait for the next packet matching `pick`; errors (disconnects) are returned as Err.
    pub async fn next_matching<T>(
        &mut self,
        mut pick: impl FnMut(&Packet) -> Option<T>,
    ) -> Result<T, String> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                match self.incoming.recv().await {
                    Some(Ok(packet)) => {
                        if let Some(value) = pick(&packet) {
                            return Ok(value);
                        }
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err("event loop ended".to_owned()),
                }
            }
        })
        .await
        .expect("mqtt wait timed out")
    }

    pub async fn connack(&mut self) -> Result<rumqttc::ConnectReturnCode, String> {
        self.next_matching(|p| match p {
            Packet::ConnAck(ack) => Some(ack.code),
            _ => None,
        })
        .await
    }

    pub async fn subscribe(&mut self, filter: &str) -> rumqttc::SubscribeReasonCode {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        self.next_matching(|p| match p {
            Packet::SubAck(ack) => ack.return_codes.first().copied(),
            _ => None,
        })
        .await
        .expect("suback")
    }

    pub async fn publish_message(&mut self, topic: String, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
        self.next_matching(|p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await
            .expect("puback");
    }

    pub async fn publish_raw(&self, topic: String, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Packet, String>>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(packet)) => {
                if tx.send(Ok(packet)).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(_)) => {}
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        }
    }
}

/// Poll `check` until it returns Some, within [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
