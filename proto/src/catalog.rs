//! The device catalog: which kind of device a model is (DEV-1 lists phone, USB, room-system
//! and workspace devices apart).
//!
//! The rule, documented here once and used everywhere (ingest stores the result with the
//! device; lists filter and the dashboard groups by it):
//!
//! 1. The model is compared case-insensitively, after trimming and after dropping a leading
//!    `SIP-` (Yealink writes `SIP-T48S` and `T48S` for the same phone).
//! 2. The first matching prefix of [`CATALOG`] wins; the table is ordered so that the more
//!    specific prefixes come first (`CP900` is a USB speakerphone, `CP960` a conference phone).
//! 3. A model no prefix matches is [`DeviceType::Other`] (it is listed, never refused).
//!
//! RPS (redirection and provisioning) is a service a device is registered with, not a kind of
//! model, so it is not a [`DeviceType`]; RPS devices will be listed from their own table.

use serde::{Deserialize, Serialize};

/// What kind of device a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    /// Desk, DECT, conference and video phones.
    Phone,
    /// USB peripherals: headsets, speakerphones, cameras, USB phones.
    Usb,
    /// Meeting-room systems: video bars, room kits, room controllers.
    RoomSystem,
    /// Workspace devices: room panels, sensors, desk displays.
    Workspace,
    /// A model the catalog does not know.
    Other,
}

impl DeviceType {
    /// Every type, in display order.
    pub const ALL: [DeviceType; 5] =
        [DeviceType::Phone, DeviceType::Usb, DeviceType::RoomSystem, DeviceType::Workspace, DeviceType::Other];

    /// The stable name (as in JSON and in the stores).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Phone => "phone",
            DeviceType::Usb => "usb",
            DeviceType::RoomSystem => "room_system",
            DeviceType::Workspace => "workspace",
            DeviceType::Other => "other",
        }
    }

    /// The type with this stable name.
    pub fn parse(name: &str) -> Option<DeviceType> {
        DeviceType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The type of a model, by the rule of this module.
    pub fn of_model(model: &str) -> DeviceType {
        let upper = model.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIP-").unwrap_or(&upper);
        CATALOG.iter().find(|(prefix, _)| name.starts_with(prefix)).map_or(DeviceType::Other, |&(_, t)| t)
    }
}

/// Model prefixes (upper case, without `SIP-`), most specific first, and their type.
pub const CATALOG: &[(&str, DeviceType)] = &[
    // Workspace (Yealink RoomPanel / RoomSensor / DeskVision) before room systems.
    ("ROOMPANEL", DeviceType::Workspace),
    ("ROOMSENSOR", DeviceType::Workspace),
    ("DESKVISION", DeviceType::Workspace),
    // USB: headsets, speakerphones, cameras, the USB phone MP50.
    ("UH", DeviceType::Usb),
    ("WH6", DeviceType::Usb),
    ("BH7", DeviceType::Usb),
    ("CP700", DeviceType::Usb),
    ("CP900", DeviceType::Usb),
    ("UVC", DeviceType::Usb),
    ("MP50", DeviceType::Usb),
    // Room systems: Yealink MeetingBar / MVC / ZVC / VC / RoomCast / CTP controllers, Poly
    // Studio, G7500, RealPresence (a Poly Trio is a conference phone: `T`).
    ("MEETINGBAR", DeviceType::RoomSystem),
    ("A10", DeviceType::RoomSystem),
    ("A20", DeviceType::RoomSystem),
    ("A30", DeviceType::RoomSystem),
    ("MVC", DeviceType::RoomSystem),
    ("ZVC", DeviceType::RoomSystem),
    ("VC", DeviceType::RoomSystem),
    ("ROOMCAST", DeviceType::RoomSystem),
    ("CTP", DeviceType::RoomSystem),
    ("STUDIO", DeviceType::RoomSystem),
    ("G7500", DeviceType::RoomSystem),
    ("REALPRESENCE", DeviceType::RoomSystem),
    // Phones: Yealink T/VP/CP/W/MP series, Poly VVX/CCX/Trio/Edge/SoundPoint.
    ("T", DeviceType::Phone),
    ("VP", DeviceType::Phone),
    ("CP", DeviceType::Phone),
    ("W", DeviceType::Phone),
    ("MP", DeviceType::Phone),
    ("VVX", DeviceType::Phone),
    ("CCX", DeviceType::Phone),
    ("EDGE", DeviceType::Phone),
    ("SOUNDPOINT", DeviceType::Phone),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_map_to_their_type() {
        let cases = [
            ("SIP-T48S", DeviceType::Phone),
            ("T54W", DeviceType::Phone),
            ("vp59", DeviceType::Phone),
            ("CP960", DeviceType::Phone),
            ("W73P", DeviceType::Phone),
            ("MP56", DeviceType::Phone),
            ("VVX 450", DeviceType::Phone),
            ("Trio 8800", DeviceType::Phone),
            ("CP900", DeviceType::Usb),
            ("UH36", DeviceType::Usb),
            ("UVC86", DeviceType::Usb),
            ("MP50", DeviceType::Usb),
            ("MeetingBar A30", DeviceType::RoomSystem),
            ("A20", DeviceType::RoomSystem),
            ("MVC940", DeviceType::RoomSystem),
            ("RoomPanel", DeviceType::Workspace),
            ("DeskVision A24", DeviceType::Workspace),
            ("", DeviceType::Other),
            ("Fridge 3000", DeviceType::Other),
        ];
        for (model, want) in cases {
            assert_eq!(DeviceType::of_model(model), want, "{model}");
        }
    }

    #[test]
    fn names_round_trip() {
        for t in DeviceType::ALL {
            assert_eq!(DeviceType::parse(t.as_str()), Some(t));
        }
        assert_eq!(DeviceType::parse("rps"), None);
    }
}
