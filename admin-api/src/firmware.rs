//! Firmware upgrades (PRV-4): the upgrade command of one device ([`upgrade_device`], also what the automatic push of a
//! configuration profile calls) and the commands of a scheduled upgrade task's run.
//!
//! A device is told to upgrade with an internal `upgrade_firmware` command whose `url` is its
//! own: `https://<download base>/firmware/<image>/<device>?token=<expiry>.<mac>`, where `mac` is
//! HMAC-SHA-256 under the server's [`FirmwareKey`] over (image, device, expiry). The HTTPS
//! download server (`firmware_download.rs`) serves the image only for that device and image,
//! before the expiry. The command's deadline is the link's expiry.

use fleetpulse_proto::commands::UPGRADE_FIRMWARE;
use fleetpulse_proto::{AccountId, DeviceId, EnterpriseId, FirmwareId, UnixMillis};
use fleetpulse_store::{Command, CommandRefusal, Device, EntityStore, FirmwareImage, NewCommand};

use crate::error::ApiError;
pub use crate::firmware_link::*;
use crate::state::ApiState;

fn downloads_off() -> ApiError {
    ApiError::Conflict("firmware downloads are off: set [firmware] https_listen to serve them".into())
}

/// Queues `device`'s upgrade to `image` (issued by `by`) and wakes its session. 404 when the
/// image is not one of the device's enterprise, 400 when it is for another model, 409 when no
/// download server runs, 429 over the pending command limits. Reads the time from the system
/// clock; see [`upgrade_device_at`].
pub async fn upgrade_device(
    state: &ApiState,
    device: &Device,
    image: FirmwareId,
    by: AccountId,
) -> Result<Command, ApiError> {
    upgrade_device_at(state, device, image, by, UnixMillis::now()).await
}

/// [`upgrade_device`] at `now`.
pub async fn upgrade_device_at(
    state: &ApiState,
    device: &Device,
    image: FirmwareId,
    by: AccountId,
    now: UnixMillis,
) -> Result<Command, ApiError> {
    let image = image_of(state.store.entities.as_ref(), device.enterprise_id, image).await?;
    if let Some(why) = model_mismatch(&image, device) {
        return Err(ApiError::InvalidRequest(why));
    }
    let (args, deadline) = upgrade_args(&state.config.firmware, &image, device.id, now).ok_or_else(downloads_off)?;
    let new = NewCommand {
        device_id: device.id,
        enterprise_id: device.enterprise_id,
        kind: UPGRADE_FIRMWARE.into(),
        args,
        deadline,
        issued_by: by,
    };
    let answer = state.store.entities.enqueue_commands(vec![new], now).await?.pop();
    let command = answer.ok_or_else(|| ApiError::Internal("the store answered no command".into()))?;
    let command = command.map_err(|refusal| match refusal {
        CommandRefusal::DeviceLimit { .. } | CommandRefusal::EnterpriseLimit { .. } => {
            ApiError::LimitExceeded(refusal.to_string())
        }
        CommandRefusal::UnknownDevice => ApiError::NotFound("device"),
        CommandRefusal::Unlicensed => ApiError::Conflict(refusal.to_string()),
        other => ApiError::Internal(format!("an upgrade command was refused: {other}")),
    })?;
    state.downlink.wake([device.id]);
    tracing::info!(message = "Queued a firmware upgrade.", device = %device.id, image = %image.id, command = %command.id);
    Ok(command)
}

/// The image if it belongs to `enterprise`, else 404.
pub(crate) async fn image_of(
    store: &dyn EntityStore,
    enterprise: EnterpriseId,
    image: FirmwareId,
) -> Result<FirmwareImage, ApiError> {
    match store.firmware(image).await? {
        Some(i) if i.enterprise_id == enterprise => Ok(i),
        _ => Err(ApiError::NotFound("firmware image")),
    }
}

/// The `{"image": id}` arguments of a scheduled upgrade task of `enterprise`, checked: the
/// image exists in it. A task stores only the image; each run makes each device's own link.
pub(crate) async fn task_args(
    store: &dyn EntityStore,
    enterprise: EnterpriseId,
    args: &serde_json::Value,
) -> Result<String, ApiError> {
    let image = args
        .as_object()
        .filter(|a| a.len() == 1)
        .and_then(|a| a.get("image"))
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| ApiError::invalid("an upgrade_firmware task takes exactly {\"image\": <firmware image id>}"))?;
    let image = image_of(store, enterprise, FirmwareId(image)).await?;
    Ok(serde_json::json!({ "image": image.id.0 }).to_string())
}

/// The commands of a run of an upgrade task (arguments `{"image": id}`): one per target device
/// of the image's model, each with its own link, and a note for what was left out.
pub(crate) async fn task_commands(
    store: &dyn EntityStore,
    settings: &FirmwareSettings,
    task: &fleetpulse_store::Task,
    devices: Vec<DeviceId>,
    now: UnixMillis,
) -> Result<(Vec<NewCommand>, Option<String>), fleetpulse_store::StoreError> {
    let image = serde_json::from_str::<serde_json::Value>(&task.args)
        .ok()
        .and_then(|a| a.get("image").and_then(serde_json::Value::as_u64))
        .map(FirmwareId);
    let image = match image {
        Some(id) => store.firmware(id).await?.filter(|i| i.enterprise_id == task.enterprise_id),
        None => None,
    };
    let Some(image) = image else {
        return Ok((Vec::new(), Some("the task's firmware image no longer exists".into())));
    };
    if settings.download_base.is_none() {
        return Ok((Vec::new(), Some("firmware downloads are off ([firmware] https_listen)".into())));
    }
    let (mut commands, mut other_model) = (Vec::new(), 0u64);
    for id in devices {
        let Some(device) = store.device(id).await?.filter(|d| d.enterprise_id == task.enterprise_id) else {
            continue;
        };
        if model_mismatch(&image, &device).is_some() {
            other_model += 1;
            continue;
        }
        let Some((args, deadline)) = upgrade_args(settings, &image, id, now) else { continue };
        commands.push(NewCommand {
            device_id: id,
            enterprise_id: task.enterprise_id,
            kind: UPGRADE_FIRMWARE.into(),
            args,
            deadline,
            issued_by: task.created_by,
        });
    }
    let note = (other_model > 0).then(|| {
        format!(
            "{other_model} target devices are not a {} and were left out (the image is for that model)",
            image.model
        )
    });
    Ok((commands, note))
}
