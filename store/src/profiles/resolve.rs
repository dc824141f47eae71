//! The resultant configuration of a device (PRV-3), a pure function: no I/O, no clock.
//!
//! Inputs: an enterprise's profiles and deployments, compiled once into a [`ProfileSet`], and a
//! device's [`DeviceFacts`] (identity, attributes, its site path nearest first and its groups
//! top priority first). Output: for every parameter key the winning value after substitution and
//! where it came from ([`Origin`]), and the firmware for the device's model with its origin.
//!
//! Ranking, highest first: the container (Device > Site > Model > Group > Global); inside Site
//! the nearer site before its parents, inside Group the device's higher-priority group first;
//! then the position of the profile in the deployment's ordered list. The first profile in this
//! order that holds a key wins it (and likewise the first that names firmware for the model).
//!
//! Substitutions in values: `${mac_address}` (12 lowercase hex digits), `${serial_number}`,
//! `${model}`, `${name}` and `${attr.KEY}` (the device attribute KEY). A variable the device lacks
//! becomes the empty string. Anything else in `${...}` is refused when the profile is saved
//! ([`Template::parse`]); a `$` not followed by `{` is kept as is.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use fleetpulse_proto::{DeviceId, FirmwareId, GroupId, Mac, ProfileId, SiteId};
use serde::Serialize;

use super::{
    Container, Deployment, DeploymentTarget, MAX_PARAMETER_VALUE, MAX_RESOLVED_PARAMETERS, MAX_SUBSTITUTIONS,
    StoredProfile,
};
use crate::Attributes;

/// A substitution variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    /// `${mac_address}`.
    MacAddress,
    /// `${serial_number}`.
    SerialNumber,
    /// `${model}`.
    Model,
    /// `${name}`.
    Name,
    /// `${attr.KEY}`.
    Attribute(String),
}

/// Why a value is not a valid template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${` without its closing `}`.
    #[error("a substitution \"${{\" is not closed with \"}}\"")]
    Unterminated,
    /// A name that is not a [`Variable`].
    #[error(
        "unknown substitution ${{{0}}} (known: ${{mac_address}}, ${{serial_number}}, ${{model}}, ${{name}}, ${{attr.KEY}})"
    )]
    Unknown(String),
    /// More than [`MAX_SUBSTITUTIONS`] substitutions.
    #[error("more than {MAX_SUBSTITUTIONS} substitutions in one value")]
    TooMany,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(Variable),
}

/// A parsed parameter value: text and substitutions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    /// The value as saved (what a template without substitutions resolves to).
    raw: String,
    /// `None` when the value has no substitution.
    segments: Option<Vec<Segment>>,
}

impl Template {
    /// Parses a value, refusing an unknown or unterminated substitution.
    pub fn parse(value: &str) -> Result<Template, TemplateError> {
        if !value.contains("${") {
            return Ok(Template { raw: value.to_owned(), segments: None });
        }
        let mut segments = Vec::new();
        let mut rest = value;
        let mut vars = 0;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(TemplateError::Unterminated)?;
            let name = &after[..end];
            let var = match name {
                "mac_address" => Variable::MacAddress,
                "serial_number" => Variable::SerialNumber,
                "model" => Variable::Model,
                "name" => Variable::Name,
                _ => match name.strip_prefix("attr.") {
                    Some(key) if crate::check_attribute_key(key).is_ok() => Variable::Attribute(key.to_owned()),
                    _ => return Err(TemplateError::Unknown(name.chars().take(64).collect())),
                },
            };
            vars += 1;
            if vars > MAX_SUBSTITUTIONS {
                return Err(TemplateError::TooMany);
            }
            segments.push(Segment::Var(var));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Template { raw: value.to_owned(), segments: Some(segments) })
    }

    /// The value for this device: borrowed when there is nothing to substitute.
    pub fn render<'a>(&'a self, device: &DeviceFacts) -> Cow<'a, str> {
        let Some(segments) = &self.segments else { return Cow::Borrowed(&self.raw) };
        let mut out = String::with_capacity(self.raw.len() + 16);
        for s in segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(Variable::MacAddress) => out.push_str(device.mac.as_ref().map_or("", Mac::as_str)),
                Segment::Var(Variable::SerialNumber) => out.push_str(device.serial.as_deref().unwrap_or("")),
                Segment::Var(Variable::Model) => out.push_str(&device.model),
                Segment::Var(Variable::Name) => out.push_str(&device.name),
                Segment::Var(Variable::Attribute(k)) => {
                    out.push_str(device.attributes.get(k).map_or("", String::as_str));
                }
            }
        }
        Cow::Owned(out)
    }
}

/// What resolution needs to know about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The device.
    pub id: DeviceId,
    /// Its MAC address, if known.
    pub mac: Option<Mac>,
    /// Its serial number, if known.
    pub serial: Option<String>,
    /// Its model.
    pub model: String,
    /// Its display name.
    pub name: String,
    /// Its attributes.
    pub attributes: Attributes,
    /// Its site and the site's parents, nearest first.
    pub sites: Vec<SiteId>,
    /// Its groups, top priority first.
    pub groups: Vec<GroupId>,
}

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin<'a> {
    /// The profile.
    pub profile_id: ProfileId,
    /// Its name.
    pub profile_name: &'a str,
    /// The deployment's container target.
    pub target: &'a DeploymentTarget,
    /// The profile's position in that deployment's list, from 1.
    pub position: u32,
}

impl Origin<'_> {
    /// The container of [`Origin::target`].
    pub fn container(&self) -> Container {
        self.target.container()
    }
}

/// One resolved parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedParameter<'a> {
    /// The value after substitution (empty when `problem` is set).
    pub value: Cow<'a, str>,
    /// Where it came from.
    pub origin: Origin<'a>,
    /// Why the value cannot be used (then it is not pushed).
    pub problem: Option<String>,
}

impl<'a> ResolvedConfiguration<'a> {
    /// The resolved value of a key.
    pub fn get(&self, key: &str) -> Option<&ResolvedParameter<'a>> {
        self.parameters.binary_search_by(|(k, _)| (*k).cmp(key)).ok().map(|i| &self.parameters[i].1)
    }
}

/// The firmware resolved for the device's model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedFirmware<'a> {
    /// The image.
    pub firmware_id: FirmwareId,
    /// Where it came from.
    pub origin: Origin<'a>,
}

/// The resultant configuration of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ResolvedConfiguration<'a> {
    /// (key, resolved value), by key.
    pub parameters: Vec<(&'a str, ResolvedParameter<'a>)>,
    /// The firmware for the device's model, if a profile names one.
    pub firmware: Option<ResolvedFirmware<'a>>,
    /// More than [`MAX_RESOLVED_PARAMETERS`] keys applied: the lowest-ranked were left out.
    pub truncated: bool,
}

#[derive(Debug)]
struct CompiledProfile {
    id: ProfileId,
    name: String,
    parameters: Vec<(String, Template)>,
    firmware: BTreeMap<String, FirmwareId>,
}

#[derive(Debug)]
struct Layer {
    target: DeploymentTarget,
    /// Indices into [`ProfileSet::profiles`], in deployment order.
    profiles: Vec<usize>,
}

/// An enterprise's profiles and deployments, indexed for resolving many devices.
#[derive(Debug, Default)]
pub struct ProfileSet {
    /// The template of no text (what a firmware winner points at).
    empty: Template,
    profiles: Vec<CompiledProfile>,
    device: HashMap<DeviceId, Layer>,
    site: HashMap<SiteId, Layer>,
    model: HashMap<String, Layer>,
    group: HashMap<GroupId, Layer>,
    global: Option<Layer>,
}

impl ProfileSet {
    /// Indexes profiles and deployments. A stored value that no longer parses is kept as its
    /// literal text (the store validates every value on save); a deployment entry naming a
    /// profile not given is skipped.
    pub fn new(profiles: &[StoredProfile], deployments: &[Deployment]) -> ProfileSet {
        let mut set = ProfileSet::default();
        let mut index = HashMap::with_capacity(profiles.len());
        for p in profiles {
            index.insert(p.id, set.profiles.len());
            set.profiles.push(CompiledProfile {
                id: p.id,
                name: p.settings.name.clone(),
                parameters: p
                    .settings
                    .parameters
                    .iter()
                    .map(|(k, v)| {
                        let t = Template::parse(v).unwrap_or(Template { raw: v.clone(), segments: None });
                        (k.clone(), t)
                    })
                    .collect(),
                firmware: p.settings.firmware.clone(),
            });
        }
        for d in deployments {
            let layer = Layer {
                target: d.target.clone(),
                profiles: d.profiles.iter().filter_map(|p| index.get(p).copied()).collect(),
            };
            match &d.target {
                DeploymentTarget::Device { device_id } => {
                    set.device.insert(*device_id, layer);
                }
                DeploymentTarget::Site { site_id } => {
                    set.site.insert(*site_id, layer);
                }
                DeploymentTarget::Model { model } => {
                    set.model.insert(model.clone(), layer);
                }
                DeploymentTarget::Group { group_id } => {
                    set.group.insert(*group_id, layer);
                }
                DeploymentTarget::Global => set.global = Some(layer),
            }
        }
        set
    }

    /// The deployments that apply to a device of this placement, highest rank first.
    fn layers<'s, 'd>(
        &'s self,
        device: DeviceId,
        sites: &'d [SiteId],
        model: &'d str,
        groups: &'d [GroupId],
    ) -> impl Iterator<Item = &'s Layer> + use<'s, 'd> {
        self.device
            .get(&device)
            .into_iter()
            .chain(sites.iter().filter_map(|s| self.site.get(s)))
            .chain(self.model.get(model))
            .chain(groups.iter().filter_map(|g| self.group.get(g)))
            .chain(self.global.as_ref())
    }

    /// The winning profile entry of every key for a device of this placement (no substitution
    /// yet): what devices of one placement share.
    fn merge<'s>(&'s self, device: DeviceId, sites: &[SiteId], model: &str, groups: &[GroupId]) -> Merged<'s> {
        let mut winners = Vec::new();
        let mut firmware = None;
        for layer in self.layers(device, sites, model, groups) {
            for (i, &pi) in layer.profiles.iter().enumerate() {
                let profile = &self.profiles[pi];
                let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
                for (key, template) in &profile.parameters {
                    let rank = u32::try_from(winners.len()).unwrap_or(u32::MAX);
                    winners.push(Winner { key, template, profile, layer, position, rank });
                }
                if firmware.is_none()
                    && let Some(&id) = profile.firmware.get(model)
                {
                    firmware = Some((id, Winner { key: "", template: &self.empty, profile, layer, position, rank: 0 }));
                }
            }
        }
        // Candidates are in rank order; a stable sort by key keeps that order among equal keys,
        // and dedup keeps the first of each key: the highest-ranked.
        winners.sort_by(|a, b| a.key.cmp(b.key));
        winners.dedup_by(|later, earlier| later.key == earlier.key);
        let truncated = winners.len() > MAX_RESOLVED_PARAMETERS;
        if truncated {
            winners.sort_by_key(|w| w.rank);
            winners.truncate(MAX_RESOLVED_PARAMETERS);
            winners.sort_by(|a, b| a.key.cmp(b.key));
        }
        Merged { winners, firmware, truncated }
    }

    /// The values of a merged placement for one device (substitutions done).
    fn render<'s>(merged: &Merged<'s>, device: &DeviceFacts) -> ResolvedConfiguration<'s> {
        let parameters = merged
            .winners
            .iter()
            .map(|w| {
                let value = w.template.render(device);
                let (value, problem) = if value.len() > MAX_PARAMETER_VALUE {
                    (Cow::Borrowed(""), Some(format!("longer than {MAX_PARAMETER_VALUE} bytes after substitution")))
                } else {
                    (value, None)
                };
                (w.key, ResolvedParameter { value, origin: w.origin(), problem })
            })
            .collect();
        let firmware = merged.firmware.map(|(firmware_id, w)| ResolvedFirmware { firmware_id, origin: w.origin() });
        ResolvedConfiguration { parameters, firmware, truncated: merged.truncated }
    }

    /// The resultant configuration of the device.
    pub fn resolve<'a>(&'a self, device: &DeviceFacts) -> ResolvedConfiguration<'a> {
        let merged = self.merge(device.id, &device.sites, &device.model, &device.groups);
        ProfileSet::render(&merged, device)
    }

    /// A resolver for many devices: devices of one placement (site path, model, groups, and no
    /// deployment of their own) share the ranking work.
    pub fn resolver(&self) -> Resolver<'_> {
        Resolver { set: self, cache: HashMap::new() }
    }
}

/// Most placements a [`Resolver`] remembers (it forgets them all when full).
pub const MAX_CACHED_PLACEMENTS: usize = 4_096;

/// [`ProfileSet::resolve`] for many devices, remembering the merged ranking per placement.
#[derive(Debug)]
pub struct Resolver<'s> {
    set: &'s ProfileSet,
    cache: HashMap<(Vec<SiteId>, String, Vec<GroupId>), Merged<'s>>,
}

impl<'s> Resolver<'s> {
    /// The resultant configuration of the device (equal to [`ProfileSet::resolve`]).
    pub fn resolve(&mut self, device: &DeviceFacts) -> ResolvedConfiguration<'s> {
        if self.set.device.contains_key(&device.id) {
            return self.set.resolve(device);
        }
        let key = (device.sites.clone(), device.model.clone(), device.groups.clone());
        if !self.cache.contains_key(&key) {
            if self.cache.len() >= MAX_CACHED_PLACEMENTS {
                self.cache.clear();
            }
            let merged = self.set.merge(device.id, &device.sites, &device.model, &device.groups);
            self.cache.insert(key.clone(), merged);
        }
        match self.cache.get(&key) {
            Some(merged) => ProfileSet::render(merged, device),
            None => self.set.resolve(device),
        }
    }
}

/// The winning entry of one key (or the firmware's profile).
#[derive(Debug, Clone, Copy)]
struct Winner<'a> {
    key: &'a str,
    template: &'a Template,
    profile: &'a CompiledProfile,
    layer: &'a Layer,
    position: u32,
    /// Order of ranking among the candidates (lower wins).
    rank: u32,
}

impl<'a> Winner<'a> {
    fn origin(&self) -> Origin<'a> {
        Origin {
            profile_id: self.profile.id,
            profile_name: &self.profile.name,
            target: &self.layer.target,
            position: self.position,
        }
    }
}

/// The merged ranking of one placement.
#[derive(Debug)]
struct Merged<'a> {
    /// By key.
    winners: Vec<Winner<'a>>,
    firmware: Option<(FirmwareId, Winner<'a>)>,
    truncated: bool,
}
