//! Sessions another node took over (issue 16): the shards forget those devices without an
//! offline transition, and a connection of theirs still open here is closed; and the verdicts
//! on devices held for an offline check.

use std::sync::Weak;

use fleetpulse_proto::DeviceId;
use fleetpulse_proto::close_code::REPLACED;

use crate::Context;
use crate::shard::ShardCmd;

/// A handle on the running ingest tier; it does not keep the tier alive (shutdown is not held up
/// by it). The default does nothing (no ingest in this process).
#[derive(Debug, Clone, Default)]
pub struct SessionTakeover {
    context: Weak<Context>,
}

impl SessionTakeover {
    pub(crate) fn new(context: Weak<Context>) -> SessionTakeover {
        SessionTakeover { context }
    }

    /// Another node holds the sessions of `devices` now: their shards forget them (no Offline
    /// alarm, no snapshot, no engine event follow), and a connection still open here is closed
    /// with `REPLACED`, so that a device that is in fact connected here opens afresh (and is
    /// claimed back).
    pub async fn taken_over(&self, devices: &[DeviceId]) {
        let Some(ctx) = self.context.upgrade() else { return };
        for &device in devices {
            if let Some((_, conn)) = ctx.connections.remove(&device) {
                conn.close(quinn::VarInt::from_u32(REPLACED), b"connected to another node");
            }
            let shard = &ctx.shards[ctx.router.shard_for(device)];
            if shard.send(ShardCmd::TakenOver { device }).await.is_err() {
                return;
            }
        }
    }

    /// The verdicts on devices held for an offline check (see
    /// [`crate::IngestConfig::offline_checks`]): `(device, elsewhere)`; a device another live node
    /// holds is forgotten here without an offline transition, the others go offline now.
    pub async fn offline_verdicts(&self, verdicts: &[(DeviceId, bool)]) {
        let Some(ctx) = self.context.upgrade() else { return };
        for &(device, elsewhere) in verdicts {
            let shard = &ctx.shards[ctx.router.shard_for(device)];
            if shard.send(ShardCmd::OfflineVerdict { device, elsewhere }).await.is_err() {
                return;
            }
        }
    }
}
