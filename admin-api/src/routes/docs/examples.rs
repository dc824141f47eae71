//! Examples of the main operations' bodies in the OpenAPI document (login, the device list,
//! acknowledging an alarm); `tests/openapi_client.rs` checks their fields against real answers.

use serde_json::{Value, json};

/// `POST /api/v1/auth/login` request.
pub(super) fn login_request() -> Value {
    json!({"email": "admin@example.com", "password": "correct-horse-battery"})
}

/// `POST /api/v1/auth/login` answer.
pub(super) fn login_response() -> Value {
    json!({
        "token": "k3Jx0m6uV7b2Qy9sT1wLr4pZ8cN5aE0d",
        "expires_at": 1_765_000_000_000_u64,
        "account": {"id": 1, "email": "admin@example.com", "role": "platform_admin"},
        "must_change_password": false
    })
}

/// `GET /api/v1/devices?online=true&limit=1` answer.
pub(super) fn device_page() -> Value {
    json!({
        "items": [{
            "id": 17,
            "enterprise_id": 3,
            "enterprise_name": "Acme Dental",
            "channel_id": 2,
            "mac": "805ec0a1b2c3",
            "serial": "",
            "model": "T54W",
            "firmware": "96.86.0.100",
            "name": "Reception",
            "device_type": "phone",
            "online": true,
            "sip_status": "registered",
            "lines": [],
            "created_at": 1_764_990_000_000_u64,
            "last_report_at": 1_765_000_000_000_u64
        }],
        "total": 240,
        "next_cursor": "eyJrIjoiMTciLCJpZCI6MTd9"
    })
}

/// `POST /api/v1/alarms/{id}/acknowledge` answer.
pub(super) fn acknowledged_alarm() -> Value {
    json!({
        "id": 42,
        "device_id": 17,
        "enterprise_id": 3,
        "code": 1001,
        "name": "SIP registration failed",
        "severity": "major",
        "first_at": 1_764_990_000_000_u64,
        "latest_at": 1_765_000_000_000_u64,
        "count": 3,
        "description": "line 1: 403 from the registrar",
        "status": "acknowledged",
        "acknowledged_at": 1_765_000_060_000_u64,
        "acknowledged_by": 1,
        "cleared_at": null,
        "cleared_by": null
    })
}
