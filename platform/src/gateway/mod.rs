//! The MQTT device gateway (IoT Hub dialect, MQTT 3.1.1, QoS 0/1) over TCP, TLS and WebSocket.
//! The protocol codec and state machine are `mqtt-protocol-core` in server role, an MQTT
//! implementation independent of the device SDK's own.

pub mod registry;
pub mod session;
pub mod transport;
