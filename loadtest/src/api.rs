//! The management API calls the load test makes: login, create an enterprise, read back the
//! stored sequence numbers of its devices, create and delete the alarm strategy of injected
//! alarms, issue commands (one device or bulk) and read a command's state.

use std::time::Duration;

use anyhow::{Context, bail};
use fleetpulse_proto::{CommandId, DeviceId, EnterpriseId, StrategyId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Page size when reading stored sequences (the API's maximum).
const PAGE_LIMIT: u32 = 1000;

/// An enterprise created for the run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Enterprise {
    /// Its id.
    pub id: EnterpriseId,
    /// Its name.
    pub name: String,
    /// The provisioning credential its devices present in `Hello`.
    pub credential: String,
}

/// What the store holds for one device: its row count and distinct sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredSequences {
    /// The device.
    pub device_id: DeviceId,
    /// Its MAC, if it identifies by MAC.
    pub mac: Option<String>,
    /// Its serial number, if it identifies by serial.
    pub serial: Option<String>,
    /// Stored rows of persisted kinds.
    pub rows: u64,
    /// Distinct stored sequence numbers as sorted inclusive `[first, last]` ranges.
    #[serde(default)]
    pub ranges: Vec<(u64, u64)>,
}

/// The body of `POST /api/v1/enterprises/{id}/alarm-strategies` (the server refuses unknown fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyRequest {
    /// Display name.
    pub name: String,
    /// Whether it selects anything.
    pub enabled: bool,
    /// Alarm type codes it selects (empty: all).
    pub alarm_types: Vec<u16>,
    /// Severities it selects (`critical`, `major`, `minor`; empty: all).
    pub severities: Vec<String>,
    /// Email addresses notified.
    pub receivers: Vec<String>,
    /// How long a new group waits for more alarms; 0 turns grouping off (0..=1 h).
    pub group_wait_ms: u64,
    /// Wait between notifications of an open group (1 s..=1 day).
    pub group_interval_ms: u64,
    /// Reminder interval of active, unacknowledged alarms (1 min..=7 days).
    pub repeat_interval_ms: u64,
    /// CPU / memory threshold rules (none here).
    pub thresholds: Vec<serde_json::Value>,
}

impl StrategyRequest {
    /// The strategy of a load test's injected alarms: selects only `alarm_type`, notifies
    /// `receiver` of every firing at once (grouping off) and sends reminders only after a week,
    /// the longest repeat interval, so that a run sees firing and resolved emails only.
    pub fn injected_alarms(name: String, alarm_type: u16, receiver: &str) -> Self {
        StrategyRequest {
            name,
            enabled: true,
            alarm_types: vec![alarm_type],
            severities: Vec::new(),
            receivers: vec![receiver.trim().to_owned()],
            group_wait_ms: 0,
            group_interval_ms: 1_000,
            repeat_interval_ms: 7 * 24 * 3_600_000,
            thresholds: Vec::new(),
        }
    }
}

/// A created alarm strategy (the fields the load test needs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreatedStrategy {
    /// Its id.
    pub id: StrategyId,
}

/// The body of `POST /api/v1/devices/{id}/commands` (and, with device ids, of the bulk route).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandRequest {
    /// The command kind.
    pub kind: String,
    /// Its arguments.
    pub args: serde_json::Value,
    /// Seconds until its deadline.
    pub deadline_s: u64,
}

/// One device's result of a bulk command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkResult {
    /// The device, if the answer names it.
    pub device_id: Option<DeviceId>,
    /// The queued command, or why it was refused.
    pub command: Result<CommandId, String>,
}

/// The command id in an answer: `command_id`, or `id`, or `command.id`.
fn command_id_of(value: &serde_json::Value) -> Option<CommandId> {
    value["command_id"]
        .as_u64()
        .or_else(|| value["id"].as_u64())
        .or_else(|| value["command"]["id"].as_u64())
        .map(CommandId)
}

/// The per-device results of a bulk answer (`results`, or `commands`), in order.
fn bulk_results(answer: &serde_json::Value) -> anyhow::Result<Vec<BulkResult>> {
    let items = answer["results"]
        .as_array()
        .or_else(|| answer["commands"].as_array())
        .with_context(|| format!("bulk command: no per-device results in {answer}"))?;
    Ok(items
        .iter()
        .map(|item| BulkResult {
            device_id: item["device_id"].as_u64().map(DeviceId),
            command: command_id_of(item).ok_or_else(|| {
                let error = &item["error"];
                error["message"].as_str().or_else(|| error.as_str()).unwrap_or("refused").to_owned()
            }),
        })
        .collect())
}

#[derive(Deserialize)]
struct StoredSequencesPage {
    devices: Vec<StoredSequences>,
    next_after: Option<DeviceId>,
}

#[derive(Deserialize)]
struct LoginResponse {
    token: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// How long an idle connection stays pooled: half the API's 10-s keep-alive bound.
const IDLE_CONNECTION_LIFETIME: Duration = Duration::from_secs(5);

/// A logged-in management API client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    /// Logs in at `base` (e.g. `http://127.0.0.1:8080`) with an admin's email and password.
    pub async fn login(base: &str, email: &str, password: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            // The API closes a kept-alive connection that waits 10 s for its next request
            // (`header_read_timeout_s`); one reused just as it closes is reset mid-request.
            // Dropping idle connections well before that keeps the pool out of the race.
            .pool_idle_timeout(IDLE_CONNECTION_LIFETIME)
            .build()
            .context("building the HTTP client")?;
        let base = base.trim_end_matches('/').to_owned();
        let response = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .with_context(|| format!("logging in at {base}"))?;
        let login: LoginResponse = parse(response, "login").await?;
        Ok(ApiClient { http, base, token: login.token })
    }

    /// The server's `/metrics` text (for the stage histograms of an alarm run).
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .context("reading /metrics")?
            .error_for_status()
            .context("reading /metrics")?;
        response.text().await.context("reading /metrics")
    }

    /// Creates an enterprise named `name`.
    pub async fn create_enterprise(&self, name: &str) -> anyhow::Result<Enterprise> {
        let response = self
            .http
            .post(format!("{}/api/v1/enterprises", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .context("creating the enterprise")?;
        parse(response, "create enterprise").await
    }

    /// Creates an alarm strategy for `enterprise`.
    pub async fn create_alarm_strategy(
        &self,
        enterprise: EnterpriseId,
        request: &StrategyRequest,
    ) -> anyhow::Result<CreatedStrategy> {
        let response = self
            .http
            .post(format!("{}/api/v1/enterprises/{enterprise}/alarm-strategies", self.base))
            .bearer_auth(&self.token)
            .json(request)
            .send()
            .await
            .context("creating the alarm strategy")?;
        parse(response, "create alarm strategy").await
    }

    /// Deletes an alarm strategy.
    pub async fn delete_alarm_strategy(&self, id: StrategyId) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(format!("{}/api/v1/alarm-strategies/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .context("deleting the alarm strategy")?;
        parse_empty(response, "delete alarm strategy").await
    }

    /// Queues a command for one device; answers its id.
    pub async fn issue_command(&self, device: DeviceId, request: &CommandRequest) -> anyhow::Result<CommandId> {
        let response = self
            .http
            .post(format!("{}/api/v1/devices/{device}/commands", self.base))
            .bearer_auth(&self.token)
            .json(request)
            .send()
            .await
            .context("issuing a command")?;
        let answer: serde_json::Value = parse(response, "issue command").await?;
        command_id_of(&answer).with_context(|| format!("issue command: no command id in {answer}"))
    }

    /// Queues one command for each of `devices` with the bulk route; answers per device.
    pub async fn issue_bulk_command(
        &self,
        devices: &[DeviceId],
        request: &CommandRequest,
    ) -> anyhow::Result<Vec<BulkResult>> {
        let body = serde_json::json!({
            "kind": request.kind, "args": request.args, "deadline_s": request.deadline_s, "device_ids": devices,
        });
        let response = self
            .http
            .post(format!("{}/api/v1/commands", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .context("issuing a bulk command")?;
        let answer: serde_json::Value = parse(response, "bulk command").await?;
        bulk_results(&answer)
    }

    /// The state of a command (`queued`, `sent`, ..., `succeeded`, `failed`, `expired`, ...).
    pub async fn command_state(&self, id: CommandId) -> anyhow::Result<String> {
        let response = self
            .http
            .get(format!("{}/api/v1/commands/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .context("reading a command")?;
        let answer: serde_json::Value = parse(response, "command state").await?;
        answer["state"].as_str().map(str::to_owned).with_context(|| format!("command state: no state in {answer}"))
    }

    /// The stored sequences of every device of `enterprise`, all pages.
    pub async fn stored_sequences(&self, enterprise: EnterpriseId) -> anyhow::Result<Vec<StoredSequences>> {
        let url = format!("{}/api/v1/enterprises/{enterprise}/stored-sequences", self.base);
        let mut devices = Vec::new();
        let mut after: Option<DeviceId> = None;
        loop {
            let mut request = self.http.get(&url).bearer_auth(&self.token).query(&[("limit", PAGE_LIMIT)]);
            if let Some(after) = after {
                request = request.query(&[("after", after.0)]);
            }
            let response = request.send().await.context("reading stored sequences")?;
            let page: StoredSequencesPage = parse(response, "stored sequences").await?;
            devices.extend(page.devices);
            match page.next_after {
                None => return Ok(devices),
                Some(next) if after.is_some_and(|a| next <= a) => {
                    bail!("stored sequences: next_after {next} does not advance past {after:?}")
                }
                Some(next) => after = Some(next),
            }
        }
    }
}

/// Decodes a successful JSON answer, or turns the API's error body into an error.
async fn parse<T: DeserializeOwned>(response: reqwest::Response, what: &str) -> anyhow::Result<T> {
    let body = success_body(response, what).await?;
    serde_json::from_slice(&body)
        .with_context(|| format!("{what}: unexpected response {}", String::from_utf8_lossy(&body)))
}

/// Checks for a successful answer whose body does not matter.
async fn parse_empty(response: reqwest::Response, what: &str) -> anyhow::Result<()> {
    success_body(response, what).await.map(drop)
}

/// The body of a successful answer, or the API's error body as an error.
async fn success_body(response: reqwest::Response, what: &str) -> anyhow::Result<bytes::Bytes> {
    let status = response.status();
    let body = response.bytes().await.with_context(|| format!("{what}: reading the response"))?;
    if !status.is_success() {
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => bail!("{what}: HTTP {status}: {} ({})", e.error.message, e.error.code),
            Err(_) => bail!("{what}: HTTP {status}: {}", String::from_utf8_lossy(&body)),
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_sequences_page_decodes() {
        let page: StoredSequencesPage = serde_json::from_str(
            r#"{"devices": [
                {"device_id": 7, "mac": "001565aabbcc", "serial": null, "rows": 5, "ranges": [[1, 3], [5, 6]]},
                {"device_id": 9, "mac": null, "serial": "SN1", "rows": 0, "ranges": []}
            ], "next_after": 9}"#,
        )
        .expect("valid page");
        assert_eq!(page.next_after, Some(DeviceId(9)));
        assert_eq!(page.devices[0].ranges, [(1, 3), (5, 6)]);
        assert_eq!(page.devices[1].serial.as_deref(), Some("SN1"));
        let last: StoredSequencesPage =
            serde_json::from_str(r#"{"devices": [], "next_after": null}"#).expect("valid page");
        assert!(last.next_after.is_none());
    }

    #[test]
    fn the_injected_alarm_strategy_has_the_servers_field_names() {
        let request = StrategyRequest::injected_alarms("loadtest-alarms".into(), 105, " lt@example.com ");
        let json = serde_json::to_value(&request).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "name": "loadtest-alarms", "enabled": true, "alarm_types": [105], "severities": [],
                "receivers": ["lt@example.com"], "group_wait_ms": 0, "group_interval_ms": 1000,
                "repeat_interval_ms": 604_800_000u64, "thresholds": []
            })
        );
        let created: CreatedStrategy = serde_json::from_str(
            r#"{"id": 12, "enterprise_id": 3, "settings": {"name": "x"}, "created_at": 1, "updated_at": 1}"#,
        )
        .expect("valid");
        assert_eq!(created.id, StrategyId(12));
    }

    #[test]
    fn command_answers_decode_in_the_shapes_the_api_may_use() {
        assert_eq!(command_id_of(&serde_json::json!({"id": 5, "state": "queued"})), Some(CommandId(5)));
        assert_eq!(command_id_of(&serde_json::json!({"command_id": 6})), Some(CommandId(6)));
        assert_eq!(command_id_of(&serde_json::json!({"command": {"id": 7}})), Some(CommandId(7)));
        assert_eq!(command_id_of(&serde_json::json!({"error": "x"})), None);
        let results = bulk_results(&serde_json::json!({
            "results": [
                {"device_id": 1, "command_id": 10},
                {"device_id": 2, "error": {"code": "too_many_commands", "message": "limit"}},
            ],
            "queued": 1, "refused": 1
        }))
        .expect("valid");
        assert_eq!(
            results,
            [
                BulkResult { device_id: Some(DeviceId(1)), command: Ok(CommandId(10)) },
                BulkResult { device_id: Some(DeviceId(2)), command: Err("limit".into()) },
            ]
        );
        assert!(bulk_results(&serde_json::json!({"queued": 0})).is_err());
    }

    #[test]
    fn enterprise_decodes_and_ignores_extra_fields() {
        let e: Enterprise =
            serde_json::from_str(r#"{"id": 3, "name": "loadtest-1", "credential": "c", "created_at": 1}"#)
                .expect("valid");
        assert_eq!(e, Enterprise { id: EnterpriseId(3), name: "loadtest-1".into(), credential: "c".into() });
    }
}
