"""Drives the Python client that openapi-python-client generated from the served OpenAPI
document against the real binary (tests/openapi_client.rs starts it and runs this).

argv: CLIENT_PARENT_DIR BASE_URL EMAIL PASSWORD ENTERPRISE_ID DEVICES
Prints one line per check; exits non-zero (an AssertionError) on the first failure.
"""

import sys

sys.path.insert(0, sys.argv[1])

from fpclient import AuthenticatedClient, Client  # noqa: E402
from fpclient.api.accounts_and_sessions import post_api_v1_auth_login  # noqa: E402
from fpclient.api.alarms import get_api_v1_alarms, get_api_v1_alarms_id, post_api_v1_alarms_id_acknowledge  # noqa: E402
from fpclient.api.commands_and_files import post_api_v1_devices_id_commands  # noqa: E402
from fpclient.api.devices import get_api_v1_devices  # noqa: E402
from fpclient.api.operation_log import get_api_v1_operation_logs  # noqa: E402
from fpclient.api.tenants import post_api_v1_accounts  # noqa: E402
from fpclient.models import CreateAccount, Error, IssueCommand, LoginRequest, Role  # noqa: E402

base, email, password = sys.argv[2], sys.argv[3], sys.argv[4]
enterprise_id, devices = int(sys.argv[5]), int(sys.argv[6])


def error_of(response, status, code):
    """The documented error shape, parsed by the generated client as its `Error` model."""
    assert response.status_code == status, (response.status_code, response.content)
    assert isinstance(response.parsed, Error), (status, response.parsed, response.content)
    assert response.parsed.error.code == code, (status, response.parsed.error.code, code)
    assert response.parsed.error.message, response.content
    print(f"{status} {code}: {response.parsed.error.message}")


def login(who, secret):
    anonymous = Client(base_url=base, raise_on_unexpected_status=True)
    return post_api_v1_auth_login.sync_detailed(client=anonymous, body=LoginRequest(email=who, password=secret))


# Log in.
answer = login(email, password)
assert answer.status_code == 200, answer.content
session = answer.parsed
assert session.account.email == email and session.token
api = AuthenticatedClient(base_url=base, token=session.token, raise_on_unexpected_status=True)
print("logged in as", session.account.email, session.account.role)

# Devices with a filter, page by page.
seen, cursor, pages = [], None, 0
while True:
    kwargs = {"cursor": cursor} if cursor else {}
    page = get_api_v1_devices.sync_detailed(client=api, enterprise_id=enterprise_id, limit=2, **kwargs).parsed
    pages += 1
    assert page.total == devices, (page.total, devices)
    seen += [d.id for d in page.items]
    assert all(d.enterprise_id == enterprise_id for d in page.items)
    cursor = page.next_cursor if isinstance(page.next_cursor, str) else None
    if not cursor:
        break
assert len(seen) == devices and len(set(seen)) == devices, seen
assert pages == (devices + 1) // 2, pages
online = get_api_v1_devices.sync_detailed(client=api, enterprise_id=enterprise_id, online=True).parsed
assert online.total == devices, online.total
print(f"devices: {len(seen)} in {pages} pages")

# Acknowledge an alarm.
alarms = get_api_v1_alarms.sync_detailed(client=api, enterprise_id=enterprise_id).parsed
assert len(alarms.items) >= 1, alarms
alarm = alarms.items[0]
assert alarm.status == "active", alarm.status
acked = post_api_v1_alarms_id_acknowledge.sync_detailed(alarm.id, client=api)
assert acked.status_code == 200, acked.content
assert acked.parsed.status == "acknowledged" and acked.parsed.acknowledged_by == session.account.id
print("acknowledged alarm", alarm.id)

# The operation log shows it.
log = get_api_v1_operation_logs.sync_detailed(client=api, limit=50).parsed
operations = [row.to_dict() for row in log.items]
assert any("acknowledge" in str(row.get("operation", "")) for row in operations), operations
print("operation log rows:", len(operations))

# The documented errors, as the generated client receives them.
error_of(get_api_v1_devices.sync_detailed(client=api, limit=0), 400, "invalid_request")
bad = AuthenticatedClient(base_url=base, token="not-a-token", raise_on_unexpected_status=True)
error_of(get_api_v1_devices.sync_detailed(client=bad), 401, "unauthorized")
error_of(login(email, "wrong password"), 401, "unauthorized")
created = post_api_v1_accounts.sync_detailed(
    client=api,
    body=CreateAccount(email="ops@client.test", role=Role.ENTERPRISE_ADMIN, enterprise_id=enterprise_id,
                       password="first-password-123"),
)
assert created.status_code == 201, created.content
fresh = AuthenticatedClient(base_url=base, token=login("ops@client.test", "first-password-123").parsed.token,
                            raise_on_unexpected_status=True)
error_of(get_api_v1_devices.sync_detailed(client=fresh), 403, "password_change_required")
error_of(get_api_v1_alarms_id.sync_detailed(999_999_999, client=api), 404, "not_found")
error_of(post_api_v1_alarms_id_acknowledge.sync_detailed(alarm.id, client=api), 409, "conflict")
device = seen[0]
for i in range(1000):
    answer = post_api_v1_devices_id_commands.sync_detailed(device, client=api, body=IssueCommand(kind="reboot"))
    if answer.status_code != 201:
        break
error_of(answer, 429, "limit_exceeded")
print(f"429 after {i} queued commands")
print("ok")
