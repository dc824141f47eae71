//! A device that presents a wrong credential once and expects to be closed with
//! `BAD_CREDENTIAL` (the run's check that the server refuses unknown credentials).

use std::sync::Arc;

use fleetpulse_proto::FrameEncoder;
use fleetpulse_proto::close_code;
use fleetpulse_proto::wire::Uplink;
use quinn::VarInt;
use tokio::sync::watch;

use super::device_state::WorkLeft;
use super::{DrainGuard, Fleet, Group, Phase, SETUP_TIMEOUT, until_stopped};
use crate::quic::{self, LinkError};

/// A device that presents a wrong credential once and expects to be closed with BAD_CREDENTIAL.
pub(super) async fn bad_credential_task(
    fleet: Arc<Fleet>,
    group: Arc<Group>,
    index: u32,
    mut phase: watch::Receiver<Phase>,
    drain: DrainGuard,
) {
    let profile = fleet.profile(index);
    let credential = format!("wrong-{:016x}", rand::random::<u64>());
    let hello = Uplink::Hello(profile.hello(&credential, fleet.heartbeat_interval_s));
    let mut encoder = FrameEncoder::default();
    let attempt = tokio::time::timeout(
        SETUP_TIMEOUT,
        quic::open_session(&group.endpoint, fleet.servers[0], &fleet.server_name, &hello, &mut encoder),
    );
    let result = tokio::select! {
        result = attempt => result.unwrap_or_else(|_| Err(LinkError::other("timed out waiting for the rejection"))),
        // Its one attempt counts until the run closes.
        () = until_stopped(&mut phase, WorkLeft { unacked: true, next_due_us: u64::MAX }) => return,
    };
    match result {
        Err(LinkError { code: Some(close_code::BAD_CREDENTIAL), .. }) => {
            fleet.counters.rejected_connections.incr();
        }
        Err(error) => {
            tracing::warn!(mac = %profile.mac, detail = %error.detail, code = ?error.code, "a bad-credential device was not rejected with BAD_CREDENTIAL");
            fleet.counters.failed_attempts.incr();
            fleet.counters.errors.incr();
        }
        Ok((link, _)) => {
            tracing::warn!(mac = %profile.mac, "the server accepted a wrong credential");
            fleet.counters.errors.incr();
            link.conn.close(VarInt::from_u32(close_code::NORMAL), b"load test done");
        }
    }
    drain.done();
}
