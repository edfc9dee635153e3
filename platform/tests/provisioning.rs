//! Provisioning over HTTP: every Provisioning Token option and invalid combination, every
//! operation state and cancellation cause, Registration Token refresh and revocation, workspace
//! disabling, and malformed or oversized requests.

mod common;

use common::{Mqtt, TestPlatform, eventually};
use reqwest::StatusCode;
use rumqttc::ConnectReturnCode;
use serde_json::{Value, json};

/// The states of `device_id`'s Registration Tokens, newest first.
async fn token_states(platform: &TestPlatform, device_id: &str) -> Vec<String> {
    let (_, tokens) = platform
        .admin(
            "GET",
            &format!("/registration-tokens?deviceId={device_id}"),
            None,
        )
        .await;
    tokens
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["state"].as_str().map(str::to_owned))
        .collect()
}

/// Revokes `device_id`'s active Registration Token, as an administrator would.
async fn revoke_active_token(platform: &TestPlatform, device_id: &str) {
    let (_, tokens) = platform
        .admin(
            "GET",
            &format!("/registration-tokens?deviceId={device_id}"),
            None,
        )
        .await;
    let active = tokens
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["state"] == "active")
        .expect("an active token");
    let id = active["id"].as_str().expect("token id");
    let (status, _) = platform
        .admin("POST", &format!("/registration-tokens/{id}/revoke"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

async fn token(platform: &TestPlatform, options: Value) -> String {
    let (status, body) = platform.create_token(options.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{options} -> {body}");
    body["token"].as_str().expect("token").to_owned()
}

async fn init_ok(platform: &TestPlatform, pt: &str, device_id: Option<&str>) -> String {
    let (status, body) = platform.init(pt, device_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["provisioningOperationId"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn approve(platform: &TestPlatform, op: &str, extra: Value) -> (StatusCode, Value) {
    let mut body = json!({"provisioningOperationId": op});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    platform.approve(body).await
}

async fn operation(platform: &TestPlatform, op: &str) -> Value {
    let (status, body) = platform
        .admin("GET", &format!("/provisioning-operations/{op}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn invalid_token_option_combinations_are_rejected_with_a_problem_detail() {
    let platform = TestPlatform::start().await;
    for (options, words) in [
        (
            json!({"defaultRegistrationTokenLifetimeSeconds": 0}),
            "greater than zero",
        ),
        (
            json!({"defaultRegistrationTokenLifetimeSeconds": "infinite"}),
            "allowInfiniteLifetime",
        ),
        (
            json!({"defaultRegistrationTokenLifetimeSeconds": 100, "maxRegistrationTokenLifetimeSeconds": 50}),
            "exceeds",
        ),
        (
            json!({"maxRegistrationTokenLifetimeSeconds": 0}),
            "greater than zero",
        ),
        (json!({"allowInfiniteLifetime": true}), "no effect"),
        (
            json!({"deviceIdOverrideMode": "disabled"}),
            "needs a defaultDeviceId",
        ),
        (
            json!({"deviceIdOverrideMode": "deviceEnforced", "defaultDeviceId": "dev-1"}),
            "never used",
        ),
        (
            json!({"deviceIdOverrideMode": "technicianEnforced", "defaultDeviceId": "dev-1"}),
            "never used",
        ),
        (json!({"defaultDeviceId": "a b"}), "defaultDeviceId"),
        (json!({"operationLifetimeSeconds": 0}), "greater than zero"),
        (
            json!({"lifetimeOverrideMode": "sometimes"}),
            "unknown variant",
        ),
        (
            json!({"defaultRegistrationTokenLifetimeSeconds": "forever"}),
            "infinite",
        ),
        (json!({"colour": "blue"}), "unknown field"),
    ] {
        let (status, body) = platform.create_token(options.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{options}");
        assert_eq!(body["type"], "/problems/invalidOptions", "{options}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(words), "{options}: {detail}");
    }
    // The valid counterparts are accepted.
    for options in [
        json!({"defaultRegistrationTokenLifetimeSeconds": "infinite", "allowInfiniteLifetime": true}),
        json!({"lifetimeOverrideMode": "allowed", "allowInfiniteLifetime": true, "maxRegistrationTokenLifetimeSeconds": 60, "defaultRegistrationTokenLifetimeSeconds": 60}),
        json!({"deviceIdOverrideMode": "disabled", "defaultDeviceId": "dev-1"}),
    ] {
        token(&platform, options).await;
    }
}

#[tokio::test]
async fn the_six_device_id_override_modes() {
    let platform = TestPlatform::start().await;
    let device_id_of = |approved: &Value| approved["deviceId"].as_str().map(str::to_owned);

    // disabled: always the default.
    let pt = token(
        &platform,
        json!({"deviceIdOverrideMode": "disabled", "defaultDeviceId": "fixed-01"}),
    )
    .await;
    assert_eq!(
        platform.init(&pt, Some("other-01")).await.0,
        StatusCode::BAD_REQUEST
    );
    let op = init_ok(&platform, &pt, Some("fixed-01")).await;
    assert_eq!(
        approve(&platform, &op, json!({"deviceId": "tech-01"}))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let op = init_ok(&platform, &pt, None).await;
    assert_eq!(
        device_id_of(&approve(&platform, &op, json!({})).await.1).as_deref(),
        Some("fixed-01")
    );

    // deviceAllowed: the device may ask, else the default; without a default it must ask.
    let pt = token(
        &platform,
        json!({"deviceIdOverrideMode": "deviceAllowed", "defaultDeviceId": "dflt-01"}),
    )
    .await;
    let op = init_ok(&platform, &pt, Some("asked-01")).await;
    assert_eq!(
        approve(&platform, &op, json!({"deviceId": "tech-01"}))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        device_id_of(&approve(&platform, &op, json!({})).await.1).as_deref(),
        Some("asked-01")
    );
    let op = init_ok(&platform, &pt, None).await;
    assert_eq!(
        device_id_of(&approve(&platform, &op, json!({})).await.1).as_deref(),
        Some("dflt-01")
    );
    let pt_without_default =
        token(&platform, json!({"deviceIdOverrideMode": "deviceAllowed"})).await;
    assert_eq!(
        platform.init(&pt_without_default, None).await.0,
        StatusCode::BAD_REQUEST
    );

    // deviceEnforced: the device must ask.
    let pt = token(&platform, json!({"deviceIdOverrideMode": "deviceEnforced"})).await;
    let (status, problem) = platform.init(&pt, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("requires the device")
    );
    let op = init_ok(&platform, &pt, Some("enforced-01")).await;
    assert_eq!(
        device_id_of(&approve(&platform, &op, json!({})).await.1).as_deref(),
        Some("enforced-01")
    );

    // technicianAllowed: the device may not ask; the technician may override the default.
    let pt = token(
        &platform,
        json!({"deviceIdOverrideMode": "technicianAllowed", "defaultDeviceId": "tdflt-01"}),
    )
    .await;
    assert_eq!(
        platform.init(&pt, Some("asked-02")).await.0,
        StatusCode::BAD_REQUEST
    );
    let op = init_ok(&platform, &pt, None).await;
    assert_eq!(
        device_id_of(
            &approve(&platform, &op, json!({"deviceId": "tset-01"}))
                .await
                .1
        )
        .as_deref(),
        Some("tset-01")
    );
    let op = init_ok(&platform, &pt, None).await;
    assert_eq!(
        device_id_of(&approve(&platform, &op, json!({})).await.1).as_deref(),
        Some("tdflt-01")
    );

    // technicianEnforced: the technician must set it.
    let pt = token(
        &platform,
        json!({"deviceIdOverrideMode": "technicianEnforced"}),
    )
    .await;
    let op = init_ok(&platform, &pt, None).await;
    assert_eq!(
        approve(&platform, &op, json!({})).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        approve(&platform, &op, json!({"deviceId": "x"})).await.0,
        StatusCode::BAD_REQUEST,
        "invalid id"
    );
    assert_eq!(
        device_id_of(
            &approve(&platform, &op, json!({"deviceId": "tmust-01"}))
                .await
                .1
        )
        .as_deref(),
        Some("tmust-01")
    );

    // deviceAndTechnicianAllowed: the device may ask, the technician may override.
    let pt = token(
        &platform,
        json!({"deviceIdOverrideMode": "deviceAndTechnicianAllowed"}),
    )
    .await;
    let op = init_ok(&platform, &pt, Some("both-01")).await;
    let op_plain = init_ok(&platform, &pt, Some("both-02")).await;
    assert_eq!(
        device_id_of(
            &approve(&platform, &op, json!({"deviceId": "both-over"}))
                .await
                .1
        )
        .as_deref(),
        Some("both-over")
    );
    assert_eq!(
        device_id_of(&approve(&platform, &op_plain, json!({})).await.1).as_deref(),
        Some("both-02")
    );
    let op = init_ok(&platform, &pt, None).await;
    assert_eq!(
        approve(&platform, &op, json!({})).await.0,
        StatusCode::BAD_REQUEST,
        "nobody named the device"
    );
}

#[tokio::test]
async fn registration_token_lifetime_modes() {
    let platform = TestPlatform::start().await;

    // disabled: the default applies and cannot be overridden.
    let pt = token(
        &platform,
        json!({"defaultRegistrationTokenLifetimeSeconds": 3600}),
    )
    .await;
    let op = init_ok(&platform, &pt, Some("life-01")).await;
    assert_eq!(
        approve(
            &platform,
            &op,
            json!({"registrationTokenLifetimeSeconds": 60})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    let (_, approved) = approve(&platform, &op, json!({})).await;
    assert_eq!(approved["registrationTokenLifetimeSeconds"], 3600);
    let (_, rt) = platform.complete(&pt, &op).await;
    let expires =
        chrono::DateTime::parse_from_rfc3339(rt["expirationTime"].as_str().expect("finite"))
            .expect("rfc3339");
    let remaining = expires.timestamp() - chrono::Utc::now().timestamp();
    assert!((3590..=3600).contains(&remaining), "{remaining}");
    let (_, registration) = platform
        .register(rt["registrationToken"].as_str().expect("rt"))
        .await;
    let lifetime = registration["tokenRemainingLifetime"]
        .as_str()
        .expect("timespan");
    assert!(
        lifetime.starts_with("00:59:") || lifetime == "01:00:00",
        "{lifetime}"
    );

    // allowed: at most the maximum, never infinite without allowInfiniteLifetime.
    let pt = token(
        &platform,
        json!({"lifetimeOverrideMode": "allowed", "defaultRegistrationTokenLifetimeSeconds": 600, "maxRegistrationTokenLifetimeSeconds": 7200}),
    )
    .await;
    let op = init_ok(&platform, &pt, Some("life-02")).await;
    assert_eq!(
        approve(
            &platform,
            &op,
            json!({"registrationTokenLifetimeSeconds": 7201})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        approve(
            &platform,
            &op,
            json!({"registrationTokenLifetimeSeconds": "infinite"})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        approve(
            &platform,
            &op,
            json!({"registrationTokenLifetimeSeconds": 0})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    let (_, approved) = approve(
        &platform,
        &op,
        json!({"registrationTokenLifetimeSeconds": 120}),
    )
    .await;
    assert_eq!(approved["registrationTokenLifetimeSeconds"], 120);

    // enforced: the technician must choose; infinite when allowed.
    let pt = token(
        &platform,
        json!({"lifetimeOverrideMode": "enforced", "allowInfiniteLifetime": true}),
    )
    .await;
    let op = init_ok(&platform, &pt, Some("life-03")).await;
    assert_eq!(
        approve(&platform, &op, json!({})).await.0,
        StatusCode::BAD_REQUEST
    );
    let (_, approved) = approve(
        &platform,
        &op,
        json!({"registrationTokenLifetimeSeconds": "infinite"}),
    )
    .await;
    assert_eq!(approved["registrationTokenLifetimeSeconds"], "infinite");
    let (_, rt) = platform.complete(&pt, &op).await;
    assert_eq!(rt["expirationTime"], Value::Null);
    let (_, registration) = platform
        .register(rt["registrationToken"].as_str().expect("rt"))
        .await;
    assert_eq!(
        registration["tokenRemainingLifetime"],
        Value::Null,
        "null means infinite"
    );
}

#[tokio::test]
async fn operation_states_and_the_three_cancellation_causes() {
    let platform = TestPlatform::start().await;
    let pt = platform.provisioning_token();

    // pending -> approved -> completed.
    let op = init_ok(&platform, &pt, Some("state-01")).await;
    assert_eq!(operation(&platform, &op).await["state"], "pending");
    let response = platform
        .http
        .put(format!(
            "{}/provisioning-operations/complete",
            platform.base()
        ))
        .header("Authorization", format!("DeviceToken {pt}"))
        .json(&json!({"provisioningOperationId": op}))
        .send()
        .await
        .expect("complete");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["retry-after"], "5");
    approve(&platform, &op, json!({})).await;
    assert_eq!(operation(&platform, &op).await["state"], "approved");
    assert_eq!(platform.complete(&pt, &op).await.0, StatusCode::OK);
    assert_eq!(operation(&platform, &op).await["state"], "completed");
    let (status, _) = approve(&platform, &op, json!({})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a completed operation cannot be approved again"
    );

    // cancelled by a technician.
    let op = init_ok(&platform, &pt, Some("state-02")).await;
    let (status, cancelled) = platform
        .admin(
            "PUT",
            "/provisioning-operations/cancel",
            Some(json!({"provisioningOperationId": op})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            cancelled["state"].clone(),
            cancelled["cancellationCause"].clone()
        ),
        (json!("cancelled"), json!("technician"))
    );
    let (status, problem) = platform.complete(&pt, &op).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(
        problem["type"],
        "/problems/deviceProvisioning/provisioningOperationCancelled"
    );

    // cancelled because another operation for the same Device ID was approved.
    let loser = init_ok(&platform, &pt, Some("state-03")).await;
    let winner = init_ok(&platform, &pt, Some("state-03")).await;
    let bystander = init_ok(&platform, &pt, Some("state-04")).await;
    approve(&platform, &winner, json!({})).await;
    let lost = operation(&platform, &loser).await;
    assert_eq!(
        (lost["state"].clone(), lost["cancellationCause"].clone()),
        (json!("cancelled"), json!("anotherOperationApproved"))
    );
    assert_eq!(operation(&platform, &bystander).await["state"], "pending");
    let (status, problem) = platform.complete(&pt, &loser).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(
        problem["type"],
        "/problems/deviceProvisioning/provisioningOperationCancelled"
    );

    // cancelled by expiry: a different 410 type, so devices start a new operation.
    let short = token(&platform, json!({"operationLifetimeSeconds": 1})).await;
    let op = init_ok(&platform, &short, Some("state-05")).await;
    let expired = eventually("the operation to expire", || async {
        let current = operation(&platform, &op).await;
        (current["state"] == "cancelled").then_some(current)
    })
    .await;
    assert_eq!(expired["cancellationCause"], "expired");
    let (status, problem) = platform.complete(&short, &op).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(
        problem["type"],
        "/problems/deviceProvisioning/provisioningOperationExpired"
    );
    assert_eq!(
        approve(&platform, &op, json!({})).await.0,
        StatusCode::CONFLICT
    );

    let (_, pending) = platform
        .admin("GET", "/provisioning-operations?state=pending", None)
        .await;
    let pending_ids: Vec<&str> = pending
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|o| o["provisioningOperationId"].as_str())
        .collect();
    assert_eq!(pending_ids, [bystander.as_str()]);
}

#[tokio::test]
async fn completing_again_and_refreshing_supersede_older_registration_tokens() {
    let platform = TestPlatform::start().await;
    let pt = platform.provisioning_token();
    let op = init_ok(&platform, &pt, Some("refresh-01")).await;
    approve(&platform, &op, json!({})).await;
    let first = platform.complete(&pt, &op).await.1["registrationToken"]
        .as_str()
        .expect("rt")
        .to_owned();
    let second = platform.complete(&pt, &op).await.1["registrationToken"]
        .as_str()
        .expect("rt")
        .to_owned();
    assert_ne!(first, second);
    assert_eq!(platform.register(&first).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(platform.register(&second).await.0, StatusCode::OK);

    let (status, refreshed) = platform
        .device(
            "PUT",
            "/devices/registration-tokens/refresh",
            &pt,
            json!({"registrationToken": second}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let third = refreshed["registrationToken"]
        .as_str()
        .expect("rt")
        .to_owned();
    assert!(
        refreshed["expirationTime"].is_string(),
        "same finite lifetime as before"
    );
    assert_eq!(platform.register(&second).await.0, StatusCode::UNAUTHORIZED);
    let (status, registration) = platform.register(&third).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(registration["deviceId"], "refresh-01");
    let (status, _) = platform
        .device(
            "PUT",
            "/devices/registration-tokens/refresh",
            &pt,
            json!({"registrationToken": "rt_bogus"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = platform
        .device(
            "PUT",
            "/devices/registration-tokens/refresh",
            "pt_bogus",
            json!({"registrationToken": third}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, tokens) = platform
        .admin("GET", "/registration-tokens?deviceId=refresh-01", None)
        .await;
    let states: Vec<&str> = tokens
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["state"].as_str())
        .collect();
    assert_eq!(states.iter().filter(|s| **s == "active").count(), 1);
    assert_eq!(states.iter().filter(|s| **s == "superseded").count(), 2);
}

#[tokio::test]
async fn revoking_a_registration_token_closes_the_live_session() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("revoke-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));

    let (_, tokens) = platform
        .admin("GET", "/registration-tokens?deviceId=revoke-01", None)
        .await;
    let id = tokens[0]["id"].as_str().expect("token id").to_owned();
    let (status, _) = platform
        .admin("POST", &format!("/registration-tokens/{id}/revoke"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        mqtt.next_matching(|_| None::<()>).await.is_err(),
        "the session is closed"
    );
    let mut again = Mqtt::spawn(device.options(&host, port));
    let refused = again.connack().await;
    assert!(
        refused.is_err(),
        "credentials of a revoked token are refused: {refused:?}"
    );
    assert_eq!(
        platform.register(&device.registration_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, tokens) = platform
        .admin("GET", "/registration-tokens?deviceId=revoke-01", None)
        .await;
    assert_eq!(tokens[0]["state"], "revoked");
}

#[tokio::test]
async fn a_refresh_whose_answer_was_lost_can_be_retried_without_a_technician() {
    let platform = TestPlatform::start().await;
    let pt = platform.provisioning_token();
    let op = init_ok(&platform, &pt, Some("refresh-02")).await;
    approve(&platform, &op, json!({})).await;
    let first = platform.complete(&pt, &op).await.1["registrationToken"]
        .as_str()
        .expect("rt")
        .to_owned();
    let refresh = |token: String| {
        let platform = &platform;
        let pt = pt.clone();
        async move {
            platform
                .device(
                    "PUT",
                    "/devices/registration-tokens/refresh",
                    &pt,
                    json!({"registrationToken": token}),
                )
                .await
        }
    };
    // The answer carrying the second token never reaches the device.
    let (status, lost) = refresh(first.clone()).await;
    assert_eq!(status, StatusCode::OK);
    // Its retry with the first token succeeds, and only the newest token works.
    let (status, retried) = refresh(first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    let third = retried["registrationToken"]
        .as_str()
        .expect("rt")
        .to_owned();
    assert_eq!(
        platform
            .register(lost["registrationToken"].as_str().expect("rt"))
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "the lost token is superseded by the retry"
    );
    assert_eq!(platform.register(&third).await.0, StatusCode::OK);
    // Once the newest token is in use, the first one is dead for good.
    let (status, refused) = refresh(first.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");

    // Two refreshes of one token at once never leave two tokens alive: the later one
    // replaces the earlier one's (as a retry would).
    let (a, b) = tokio::join!(refresh(third.clone()), refresh(third.clone()));
    let mut working = 0;
    for answer in [a.1, b.1] {
        if let Some(token) = answer["registrationToken"].as_str()
            && platform.register(token).await.0 == StatusCode::OK
        {
            working += 1;
        }
    }
    assert_eq!(working, 1, "exactly one of the two refreshed tokens works");
    let states = token_states(&platform, "refresh-02").await;
    let active = states.iter().filter(|s| *s == "active").count();
    assert_eq!(active, 1, "{states:?}");
}

#[tokio::test]
async fn an_operation_can_be_completed_again_for_15_minutes_and_not_after() {
    let platform = TestPlatform::start().await;
    let pt = platform.provisioning_token();
    let op = init_ok(&platform, &pt, Some("window-01")).await;
    approve(&platform, &op, json!({})).await;
    assert_eq!(platform.complete(&pt, &op).await.0, StatusCode::OK);
    // The first completion moves back in time: 14 minutes ago is still within the window.
    let completed_ago = |minutes: i64| {
        let db = platform.platform.state().store.lock();
        db.execute(
            "UPDATE provisioning_operations SET completed_at = ?2 WHERE id = ?1",
            rusqlite::params![op, now_ms() - minutes * 60_000],
        )
        .expect("backdated");
    };
    completed_ago(14);
    let (status, again) = platform.complete(&pt, &op).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    // 16 minutes ago: too long, whoever asks.
    completed_ago(16);
    let (status, problem) = platform.complete(&pt, &op).await;
    assert_eq!(status, StatusCode::GONE, "{problem}");
    assert_eq!(
        problem["type"],
        "/problems/deviceProvisioning/provisioningOperationCompleted"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("too long ago")),
        "{problem}"
    );
}

#[tokio::test]
async fn a_lost_refresh_can_be_retried_for_15_minutes_and_not_after() {
    let platform = TestPlatform::start().await;
    let pt = platform.provisioning_token();
    let op = init_ok(&platform, &pt, Some("grace-01")).await;
    approve(&platform, &op, json!({})).await;
    let first = platform.complete(&pt, &op).await.1["registrationToken"]
        .as_str()
        .expect("rt")
        .to_owned();
    let refresh = || {
        platform.device(
            "PUT",
            "/devices/registration-tokens/refresh",
            &pt,
            json!({"registrationToken": first}),
        )
    };
    // The answer carrying the successor is lost; the first token was superseded when?
    assert_eq!(refresh().await.0, StatusCode::OK);
    let superseded_ago = |minutes: i64| {
        let db = platform.platform.state().store.lock();
        db.execute(
            "UPDATE registration_tokens SET closed_at = ?1
             WHERE device_id = 'grace-01' AND state = 'superseded'",
            rusqlite::params![now_ms() - minutes * 60_000],
        )
        .expect("backdated");
    };
    // 16 minutes ago: too late for a retry (its successor is unused: the time alone refuses).
    superseded_ago(16);
    let (status, refused) = refresh().await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "after the grace: {refused}"
    );
    assert_eq!(
        refused["detail"], "the Registration Token was superseded",
        "{refused}"
    );
    // 14 minutes ago: still within it.
    superseded_ago(14);
    let (status, retried) = refresh().await;
    assert_eq!(status, StatusCode::OK, "within the grace: {retried}");
}

/// Milliseconds since the Unix epoch, as the Platform stores its times.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[tokio::test]
async fn after_a_revocation_the_operation_cannot_be_completed_again() {
    let platform = TestPlatform::start().await;
    let pt = platform.provisioning_token();
    let op = init_ok(&platform, &pt, Some("revoke-02")).await;
    approve(&platform, &op, json!({})).await;
    let (status, _) = platform.complete(&pt, &op).await;
    assert_eq!(status, StatusCode::OK);
    // The device lost the answer and asks again: fine, shortly after.
    let (status, again) = platform.complete(&pt, &op).await;
    assert_eq!(status, StatusCode::OK, "{again}");

    revoke_active_token(&platform, "revoke-02").await;

    // Whoever holds the Provisioning Token and the operation id gets no new token.
    let (status, problem) = platform.complete(&pt, &op).await;
    assert_eq!(status, StatusCode::GONE, "{problem}");
    assert_eq!(
        problem["type"],
        "/problems/deviceProvisioning/provisioningOperationCompleted"
    );
    let states = token_states(&platform, "revoke-02").await;
    assert!(
        states.iter().all(|s| s != "active"),
        "no active token after the revocation: {states:?}"
    );
}

#[tokio::test]
async fn revoking_the_active_token_also_closes_sessions_on_credentials_of_tokens_it_superseded() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("revoke-03").await;
    let (host, port) = platform.mqtt_tcp();
    // Connected with a credential issued for the first Registration Token.
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    let pt = platform.provisioning_token();
    let (status, refreshed) = platform
        .device(
            "PUT",
            "/devices/registration-tokens/refresh",
            &pt,
            json!({"registrationToken": device.registration_token}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");

    // The refreshed token is the active one.
    revoke_active_token(&platform, "revoke-03").await;

    assert!(
        mqtt.next_matching(|_| None::<()>).await.is_err(),
        "the session on the older token's credential is closed"
    );
    let refused = Mqtt::spawn(device.options(&host, port)).connack().await;
    assert!(
        refused.is_err() || refused == Ok(ConnectReturnCode::NotAuthorized),
        "the older token's credential is refused: {refused:?}"
    );
    assert_eq!(
        token_states(&platform, "revoke-03").await,
        ["revoked", "revoked"]
    );
}

#[tokio::test]
async fn deleting_a_device_disconnects_it_and_revokes_its_tokens() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("delete-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    let (status, _) = platform
        .admin("DELETE", "/devices/delete-01/delete", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(mqtt.next_matching(|_| None::<()>).await.is_err());
    assert_eq!(
        platform.register(&device.registration_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        platform.admin("GET", "/devices/delete-01", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_disabled_workspace_answers_423_with_retry_after() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("locked-01").await;
    let url = format!("{}/workspaces/{}", platform.base(), platform.workspace());
    let (status, _) = platform
        .admin_url("PATCH", &url, Some(json!({"disabled": true})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let response = platform
        .http
        .post(format!("{}/provisioning-operations/init", platform.base()))
        .header(
            "Authorization",
            format!("DeviceToken {}", platform.provisioning_token()),
        )
        .json(&json!({}))
        .send()
        .await
        .expect("init");
    assert_eq!(response.status(), StatusCode::LOCKED);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        platform.register(&device.registration_token).await.0,
        StatusCode::LOCKED
    );
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    let refused = mqtt.connack().await.expect_err("refused");
    assert!(refused.contains("ServiceUnavailable"), "{refused}");
    platform
        .admin_url("PATCH", &url, Some(json!({"disabled": false})))
        .await;
    assert_eq!(
        platform.register(&device.registration_token).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn malformed_unauthorized_and_oversized_requests_get_problem_details() {
    let platform = TestPlatform::start().await;
    let pt = platform.provisioning_token();
    let send = |path: &str, token: &str, body: Vec<u8>| {
        platform
            .http
            .post(format!("{}{path}", platform.base()))
            .header("Authorization", format!("DeviceToken {token}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    for (body, status) in [
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST),
        (br#"{"deviceId": 5}"#.to_vec(), StatusCode::BAD_REQUEST),
        (br#"{"deviceId": "x"}"#.to_vec(), StatusCode::BAD_REQUEST),
        (
            br#"{"deviceId": "ok-01", "parameters": {"n": 1}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"deviceId": "{}"}}"#, "a".repeat(100 * 1024)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let response = send("/provisioning-operations/init", &pt, body)
            .await
            .expect("send");
        assert_eq!(response.status(), status);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("problem json");
        assert!(
            problem["title"].is_string() && problem["detail"].is_string(),
            "{problem}"
        );
        assert_eq!(problem["status"], status.as_u16());
    }
    let response = send(
        "/provisioning-operations/init",
        "pt_unknown",
        b"{}".to_vec(),
    )
    .await
    .expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = send("/no/such/endpoint", &pt, b"{}".to_vec())
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (status, _) = platform
        .admin_url("GET", &format!("{}/workspaces", platform.base()), None)
        .await;
    assert_eq!(status, StatusCode::OK, "still serving");
    let (status, body) = platform.init(&pt, Some("params-01")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn parameters_sent_with_init_are_shown_to_the_technician() {
    let platform = TestPlatform::start().await;
    let (status, op) = platform
        .device(
            "POST",
            "/provisioning-operations/init",
            &platform.provisioning_token(),
            json!({"deviceId": "param-01", "parameters": {"room": "lab 3", "serial": "A-17"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let shown = operation(
        &platform,
        op["provisioningOperationId"].as_str().expect("id"),
    )
    .await;
    assert_eq!(
        shown["parameters"],
        json!({"room": "lab 3", "serial": "A-17"})
    );
    assert_eq!(shown["verificationCode"], op["verificationCode"]);
}

#[tokio::test]
async fn fleet_configurations_target_devices_by_tags_and_reported_properties() {
    let platform = TestPlatform::start().await;
    for id in ["fleet-01", "fleet-02", "fleet-03"] {
        platform.provision(id).await;
    }
    platform
        .admin(
            "PUT",
            "/devices/fleet-01/tags",
            Some(json!({"site": "north"})),
        )
        .await;
    platform
        .admin(
            "PUT",
            "/devices/fleet-02/tags",
            Some(json!({"site": "north"})),
        )
        .await;
    platform
        .admin(
            "PUT",
            "/devices/fleet-03/tags",
            Some(json!({"site": "south"})),
        )
        .await;
    let device = platform.provision("fleet-02").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    mqtt.subscribe("$iothub/twin/res/#").await;
    mqtt.publish_raw(
        "$iothub/twin/PATCH/properties/reported/?$rid=1".into(),
        br#"{"model":"x2"}"#.to_vec(),
    )
    .await;
    mqtt.next_matching(|p| {
        matches!(p, rumqttc::Packet::Publish(p) if p.topic.contains("$rid=1")).then_some(())
    })
    .await
    .expect("reported ack");

    let (status, created) = platform
        .admin(
            "POST",
            "/fleet-configurations",
            Some(json!({"name": "north x2", "targetTags": {"site": "north"}, "targetReportedProperties": {"model": "x2"}, "desiredProperties": {"sampling": 10}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["appliedTo"], json!(["fleet-02"]));
    let desired = |id: &'static str| {
        let platform = &platform;
        async move {
            platform
                .admin("GET", &format!("/devices/{id}/desired-properties"), None)
                .await
                .1
        }
    };
    assert_eq!(desired("fleet-02").await, json!({"sampling": 10}));
    assert_eq!(desired("fleet-01").await, json!({}));
    // A device that starts to match later gets the configuration too.
    platform
        .admin(
            "PUT",
            "/devices/fleet-03/tags",
            Some(json!({"site": "north"})),
        )
        .await;
    assert_eq!(
        desired("fleet-03").await,
        json!({}),
        "fleet-03 does not report model x2"
    );
    let (status, problem) = platform
        .admin(
            "POST",
            "/fleet-configurations",
            Some(json!({"name": "all", "desiredProperties": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

#[tokio::test]
async fn console_is_served_and_browsers_may_call_cross_origin() {
    let platform = TestPlatform::start().await;
    let console = platform
        .http
        .get(format!("{}/console", platform.base()))
        .send()
        .await
        .expect("console");
    assert_eq!(console.status(), StatusCode::OK);
    assert!(
        console
            .text()
            .await
            .expect("html")
            .contains("technician console")
    );
    let preflight = platform
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/devices/register", platform.base()),
        )
        .header("Origin", "http://localhost:5173")
        .header("Access-Control-Request-Method", "PUT")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn armed_faults_answer_with_retry_after_then_clear_themselves() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("fault-01").await;
    let faults = format!("{}/faults", platform.base());
    let (status, _) = platform
        .admin_url("POST", &faults, Some(json!({"pathPrefix": "/devices/register", "status": 429, "retryAfterSeconds": 3, "count": 2})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for _ in 0..2 {
        let response = platform
            .http
            .put(format!("{}/devices/register", platform.base()))
            .header(
                "Authorization",
                format!("DeviceToken {}", device.registration_token),
            )
            .json(&json!({"connectionStringType": "SharedAccessSignature"}))
            .send()
            .await
            .expect("register");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "3");
    }
    assert_eq!(
        platform.register(&device.registration_token).await.0,
        StatusCode::OK
    );
    assert_eq!(platform.admin_url("GET", &faults, None).await.1, json!([]));

    platform
        .admin_url("POST", &faults, Some(json!({"target": "mqttConnect"})))
        .await;
    let (host, port) = platform.mqtt_tcp();
    let mut refused = Mqtt::spawn(device.options(&host, port));
    let error = refused.connack().await.expect_err("refused once");
    assert!(error.contains("ServiceUnavailable"), "{error}");
    let mut accepted = Mqtt::spawn(device.options(&host, port));
    assert_eq!(accepted.connack().await, Ok(ConnectReturnCode::Success));

    let (status, _) = platform
        .admin_url("POST", &faults, Some(json!({"status": 200})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
