//! Tests of the whole API through `app()` with `oneshot`: a real embedded store in a temporary
//! directory, no sockets, and a manual clock that stands still until a test advances it.

mod account;
mod auth;
mod commands;
mod console;
mod dead_letters;
mod devices;
mod firmware;
mod groups;
mod hostile_ids;
mod hostile_text;
mod incidents;
mod inherited_strategies;
mod inventory;
mod openapi;
mod oplog;
mod ops;
mod orders;
mod placement;
mod portal;
mod profiles;
mod relays;
mod resources;
mod sessions;
mod sites;
mod strategies;
mod tasks;
mod tenancy;
mod tenant_admin;
mod windows;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use fleetpulse_ingest::LiveState;
use fleetpulse_store::Store;
use fleetpulse_store::embedded::EmbeddedConfig;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;

use crate::{ApiConfig, ApiState, BootstrapOutcome, ManualClock, app_with_clock, bootstrap_admin};

const ADMIN_EMAIL: &str = "ops@example.com";
const ADMIN_PASSWORD: &str = "s3cret-enough";

/// An app over a fresh store, with handles on what the tests drive.
struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    ready: Arc<AtomicBool>,
    /// The API's clock: starts at the wall-clock time the harness is built and moves only when
    /// a test advances it.
    clock: ManualClock,
    app: Router,
}

fn harness() -> Harness {
    harness_with(ApiConfig::default(), Registry::default())
}

fn harness_with(config: ApiConfig, registry: Registry) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_embedded(dir.path(), EmbeddedConfig { fsync: false, ..EmbeddedConfig::default() })
        .expect("open store");
    let ready = Arc::new(AtomicBool::new(false));
    let state = ApiState {
        store: store.clone(),
        live: Arc::new(LiveState::new()),
        registry: Arc::new(registry),
        ready: ready.clone(),
        config,
        alarms: None,
        downlink: fleetpulse_ingest::CommandSignal::default(),
        sessions: fleetpulse_ingest::SessionCloser::default(),
        cluster: None,
    };
    let clock = ManualClock::new(fleetpulse_proto::UnixMillis::now());
    Harness { _dir: dir, store, ready, app: app_with_clock(state, clock.clock()), clock }
}

/// A response, read whole.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    /// Asserts the status and the JSON error shape with this code.
    fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "error responses are JSON"
        );
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(req).await.expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("read body").to_bytes().to_vec();
        Reply { status, headers, body }
    }

    /// Sends a request with an optional bearer token and an optional JSON body.
    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some(body) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.expect("valid request")).await
    }

    async fn get(&self, uri: &str, token: &str) -> Reply {
        self.call(Method::GET, uri, Some(token), None).await
    }

    async fn login(&self, email: &str, password: &str) -> Reply {
        let body = serde_json::json!({ "email": email, "password": password });
        self.call(Method::POST, "/api/v1/auth/login", None, Some(body)).await
    }

    /// Creates the admin and logs in; returns the bearer token.
    async fn admin_token(&self) -> String {
        let outcome = bootstrap_admin(&self.store, Some(ADMIN_EMAIL.into()), Some(ADMIN_PASSWORD.into()))
            .await
            .expect("bootstrap");
        assert!(matches!(outcome, BootstrapOutcome::Created { .. }));
        let reply = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.json()["token"].as_str().expect("token").to_owned()
    }
}

/// A channel that allows sub-channels (and devices), created in the store.
async fn stored_channel(
    h: &Harness,
    name: &str,
    parent: Option<fleetpulse_proto::ChannelId>,
) -> fleetpulse_proto::ChannelId {
    let new = fleetpulse_store::NewChannel {
        name: name.into(),
        parent_id: parent,
        allow_sub_channels: true,
        device_management: true,
        rps: false,
        contact: String::new(),
        email: String::new(),
        phone: String::new(),
        country: String::new(),
    };
    h.store.entities.create_channel(new, fleetpulse_proto::UnixMillis(1)).await.expect("channel").id
}

/// An enterprise of the channel, created in the store (credential `cred-<name>`).
async fn stored_enterprise(
    h: &Harness,
    name: &str,
    channel: fleetpulse_proto::ChannelId,
) -> fleetpulse_proto::EnterpriseId {
    let new = fleetpulse_store::NewEnterprise {
        name: name.into(),
        credential: format!("cred-{name}"),
        channel_id: Some(channel),
        profile: Default::default(),
    };
    h.store.entities.create_enterprise(new).await.expect("enterprise").id
}

/// The ids of a listing's `items` (asserting a 200).
fn item_ids(reply: &Reply) -> Vec<u64> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["items"].as_array().expect("items").iter().map(|i| i["id"].as_u64().expect("id")).collect()
}

/// Rows the tests put straight into the store, where going through the API would only repeat
/// what another test covers.
impl Harness {
    /// Registers a device of `enterprise` with this MAC (12 hex digits) and model, firmware 1.0.
    async fn phone(
        &self,
        enterprise: fleetpulse_proto::EnterpriseId,
        mac: &str,
        model: &str,
    ) -> fleetpulse_proto::DeviceId {
        let new = fleetpulse_store::NewDevice {
            enterprise_id: enterprise,
            key: fleetpulse_proto::domain::DeviceKey::Mac(fleetpulse_proto::Mac::parse(mac).expect("a MAC")),
            serial: None,
            model: model.into(),
            firmware: "1.0".into(),
            at: fleetpulse_proto::UnixMillis(1),
        };
        self.store.entities.register_device(new).await.expect("device").device.id
    }

    /// Stores alarm `code` raised on `device` at 10 ms (as its shard would after the device's
    /// frame) and answers the alarm record's id.
    async fn raise(
        &self,
        enterprise: fleetpulse_proto::EnterpriseId,
        device: fleetpulse_proto::DeviceId,
        code: u16,
        description: &str,
    ) -> u64 {
        use fleetpulse_proto::domain::{AlarmChange, AlarmChangeKind};
        let raise = AlarmChange {
            device_id: device,
            enterprise_id: enterprise,
            code: fleetpulse_proto::AlarmTypeCode(code),
            at: fleetpulse_proto::UnixMillis(10),
            kind: AlarmChangeKind::Raise { description: description.into() },
        };
        let batch = fleetpulse_store::EventBatch { alarm_changes: vec![raise], ..Default::default() };
        self.store.events.append(batch).await.expect("alarm");
        let filter = fleetpulse_store::AlarmFilter {
            enterprise: Some(enterprise),
            device: Some(device),
            code: Some(fleetpulse_proto::AlarmTypeCode(code)),
            ..Default::default()
        };
        self.store.events.list_alarm_records(filter, fleetpulse_store::Page::first(1)).await.expect("alarms")[0].id
    }
}
