//! The API's own metrics and the live-device gauges, and the `/metrics` exposition.
//!
//! The shared registry ([`crate::ApiState::registry`]) is built by the binary and shared
//! immutably, so the API keeps its metrics in a registry of its own, created in [`crate::app`]:
//! request counters by status class and login failures (prometheus-client counters, which are
//! atomics), plus a collector that computes `fleetpulse_devices_{online,connected,known}` from
//! [`LiveState::counts`] at scrape time. `/metrics` encodes the shared registry, then this one,
//! then the single `# EOF` line that ends an OpenMetrics exposition.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use fleetpulse_ingest::LiveState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Label set of the request counter: the status class (`2xx`, `4xx`, ...).
type ClassLabel = [(&'static str, &'static str); 1];

/// Status classes, in label form.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Metrics of the management API.
#[derive(Debug)]
pub(crate) struct ApiMetrics {
    registry: Registry,
    requests: Family<ClassLabel, Counter>,
    login_failures: Counter,
}

impl ApiMetrics {
    /// Creates the metrics, their registry and the live-device collector.
    pub(crate) fn new(live: Arc<LiveState>, store: fleetpulse_store::Store) -> ApiMetrics {
        let mut registry = Registry::default();
        let requests = Family::<ClassLabel, Counter>::default();
        for class in CLASSES {
            // Created up front so every class is exported, at 0 until it happens.
            let _ = requests.get_or_create(&[("class", class)]);
        }
        registry.register(
            "fleetpulse_api_requests",
            "HTTP requests answered by the management API, by status class",
            requests.clone(),
        );
        let login_failures = Counter::default();
        registry.register(
            "fleetpulse_api_login_failures",
            "Failed logins (unknown email or wrong password)",
            login_failures.clone(),
        );
        registry.register_collector(Box::new(LiveDeviceGauges { live }));
        registry.register_collector(Box::new(StoreGauges { store }));
        ApiMetrics { registry, requests, login_failures }
    }

    /// Counts a response by its status class.
    pub(crate) fn request_answered(&self, status: StatusCode) {
        let class = match status.as_u16() / 100 {
            1 => CLASSES[0],
            2 => CLASSES[1],
            3 => CLASSES[2],
            4 => CLASSES[3],
            _ => CLASSES[4],
        };
        self.requests.get_or_create(&[("class", class)]).inc();
    }

    /// Counts a failed login.
    pub(crate) fn login_failed(&self) {
        self.login_failures.inc();
    }

    /// The OpenMetrics text exposition of `shared` followed by the API's metrics.
    pub(crate) fn render(&self, shared: &Registry) -> Result<String, fmt::Error> {
        let mut out = String::new();
        encode_registry(&mut out, shared)?;
        encode_registry(&mut out, &self.registry)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// Device gauges computed from the live state on each scrape.
#[derive(Debug)]
struct LiveDeviceGauges {
    live: Arc<LiveState>,
}

impl Collector for LiveDeviceGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let counts = self.live.counts(None);
        for (name, help, value) in [
            ("fleetpulse_devices_online", "Devices online (heartbeats within their interval)", counts.online),
            ("fleetpulse_devices_connected", "Devices with an open connection", counts.connected),
            ("fleetpulse_devices_known", "Devices seen since the process started", counts.known),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Middleware: counts every response (fallbacks and rejections included) by status class.
/// The store backend's own numbers (writer queue, commits, spool), read at scrape time.
#[derive(Debug)]
struct StoreGauges {
    store: fleetpulse_store::Store,
}

impl Collector for StoreGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for m in self.store.events.metrics() {
            if m.counter {
                let counter = ConstCounter::new(m.value);
                counter.encode(encoder.encode_descriptor(m.name, m.help, None, counter.metric_type())?)?;
            } else {
                let gauge = ConstGauge::new(m.value as i64);
                gauge.encode(encoder.encode_descriptor(m.name, m.help, None, gauge.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// Middleware on every request: counts the answer by status class and logs it at debug level.
pub(crate) async fn count_requests(State(metrics): State<Arc<ApiMetrics>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    metrics.request_answered(response.status());
    tracing::debug!(message = "Request answered.", %method, %path, status = response.status().as_u16());
    response
}
