//! The run settings as flags, made from the one table of settings
//! (`tabtune::train::setting::SETTINGS`): name, help and default come from
//! there, and the text a person typed goes to `RunSettings::from_text`,
//! which refuses a bad value with the same message the page shows.

use std::marker::PhantomData;

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};

use tabtune::Result;
use tabtune::train::RunSettings;
use tabtune::train::setting::{Kind, Preset, SETTINGS, Setting};

/// Which settings a command takes.
pub trait Subset {
    /// Their names; empty means all of them.
    const NAMES: &'static [&'static str];
}

/// Every setting (`train`).
#[derive(Debug, Clone)]
pub struct All;
impl Subset for All {
    const NAMES: &'static [&'static str] = &[];
}

/// The settings that shape batches (`eval`, `data inspect`).
#[derive(Debug, Clone)]
pub struct Batching;
impl Subset for Batching {
    const NAMES: &'static [&'static str] = &["batch", "seq-len"];
}

/// The settings a benchmark step depends on (`bench`).
#[derive(Debug, Clone)]
pub struct Shape;
impl Subset for Shape {
    const NAMES: &'static [&'static str] =
        &["batch", "seq-len", "rank", "targets", "keep-activations"];
}

/// The settings given on the command line, as typed.
#[derive(Debug, Clone)]
pub struct SettingsArgs<S> {
    given: Vec<(&'static str, String)>,
    subset: PhantomData<S>,
}

fn settings_of<S: Subset>() -> impl Iterator<Item = &'static Setting> {
    SETTINGS
        .iter()
        .filter(|s| S::NAMES.is_empty() || S::NAMES.contains(&s.name))
}

impl<S: Subset> SettingsArgs<S> {
    /// The settings, every given value checked, the rest at their defaults.
    pub fn settings(&self) -> Result<RunSettings> {
        RunSettings::from_text(self.given.iter().map(|(n, v)| (*n, v.as_str())))
    }

    /// [`SettingsArgs::settings`] over `preset`'s settings: those given
    /// on the command line win.
    pub fn settings_with(&self, preset: Option<&'static Preset>) -> Result<RunSettings> {
        RunSettings::from_preset(preset, self.given.iter().map(|(n, v)| (*n, v.as_str())))
    }

    /// The names of the settings given on the command line.
    pub fn given(&self) -> Vec<&'static str> {
        self.given.iter().map(|(n, _)| *n).collect()
    }
}

fn arg(s: &'static Setting, defaults: &RunSettings) -> Arg {
    let default = match s.empty {
        Some(empty) => empty.to_string(),
        None => s.value_text(defaults),
    };
    let arg = Arg::new(s.name).long(s.name);
    match s.kind {
        Kind::Flag => arg.action(ArgAction::SetTrue).help(s.help),
        _ => arg
            // A negative number reaches the setting's own message.
            .allow_hyphen_values(true)
            .help(format!("{} [default: {default}; {}]", s.help, s.allowed())),
    }
}

impl<S: Subset> clap::Args for SettingsArgs<S> {
    fn augment_args(cmd: Command) -> Command {
        let defaults = RunSettings::default();
        cmd.args(settings_of::<S>().map(|s| arg(s, &defaults)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<S: Subset> FromArgMatches for SettingsArgs<S> {
    fn from_arg_matches(m: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        let given = settings_of::<S>()
            .filter_map(|s| match s.kind {
                Kind::Flag => m.get_flag(s.name).then(|| (s.name, "true".to_string())),
                _ => m.get_one::<String>(s.name).map(|v| (s.name, v.clone())),
            })
            .collect();
        Ok(Self {
            given,
            subset: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}
