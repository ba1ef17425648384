//! Every run setting described once: its name (the CLI flag and the page's
//! field), a label, the kind of value with its allowed range, and one line
//! of help. Defaults are [`RunSettings::default`]'s. The CLI makes its
//! flags from [`SETTINGS`], the page builds its Settings form from them
//! (through the engine), and both hand the person's text to
//! [`RunSettings::from_text`], so a value is refused with the same message
//! wherever it was typed.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::lora::Target;
use crate::train::RunSettings;

/// The kind of value a setting takes, with its allowed range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    /// A whole number in `min..=max`.
    Int {
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A finite number between `min` and `max`, each end included or not.
    Float {
        /// Lower end.
        min: f64,
        /// Whether `min` itself is allowed.
        min_included: bool,
        /// Upper end.
        max: f64,
        /// Whether `max` itself is allowed.
        max_included: bool,
    },
    /// On or off.
    Flag,
    /// One word of `choices`.
    Choice {
        /// The allowed words.
        choices: &'static [&'static str],
    },
    /// A comma list of projections (of `choices`) or `all`.
    Targets {
        /// The projections.
        choices: &'static [&'static str],
    },
}

/// One setting a person chooses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Setting {
    /// The CLI flag without `--`, and the page field's name.
    pub name: &'static str,
    /// What the page calls it.
    pub label: &'static str,
    /// Its values.
    pub kind: Kind,
    /// What leaving it empty means, when it may be left empty.
    pub empty: Option<&'static str>,
    /// One line of help.
    pub help: &'static str,
}

const fn int(min: u64, max: u64) -> Kind {
    Kind::Int { min, max }
}

const fn float(min: f64, min_included: bool, max: f64, max_included: bool) -> Kind {
    Kind::Float {
        min,
        min_included,
        max,
        max_included,
    }
}

/// Steps, warm-up steps and the validation interval are capped so a typo
/// like 2^32 is caught rather than planned for.
pub const MAX_STEPS: u64 = 10_000_000;

/// Every run setting, in the order the page shows them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "rank",
        label: "Rank",
        kind: int(1, 1024),
        empty: None,
        help: "Size of the adapter (LoRA r). Higher learns more but is slower; 8 suits most tasks.",
    },
    Setting {
        name: "alpha",
        label: "Alpha",
        kind: float(0.0, false, 65536.0, true),
        empty: None,
        help: "Strength of the adapter: updates are scaled by alpha / rank.",
    },
    Setting {
        name: "lr",
        label: "Learning rate",
        kind: float(0.0, false, 1.0, false),
        empty: None,
        help: "Step size at the peak of the schedule (after warm-up).",
    },
    Setting {
        name: "epochs",
        label: "Epochs",
        kind: float(0.0, false, 10000.0, true),
        empty: None,
        help: "Passes over your data, used when Steps is empty.",
    },
    Setting {
        name: "steps",
        label: "Steps",
        kind: int(1, MAX_STEPS),
        empty: Some("from epochs"),
        help: "Optimizer steps; overrides Epochs when set.",
    },
    Setting {
        name: "batch",
        label: "Batch",
        kind: int(1, 4096),
        empty: None,
        help: "Examples per micro-batch. Larger is smoother but needs more memory.",
    },
    Setting {
        name: "grad-accum",
        label: "Accumulation",
        kind: int(1, 4096),
        empty: None,
        help: "Micro-batches per optimizer step (gradient accumulation).",
    },
    Setting {
        name: "seq-len",
        label: "Sequence length",
        kind: int(2, 65536),
        empty: None,
        help: "Longest example in tokens; longer ones are cut.",
    },
    Setting {
        name: "dropout",
        label: "Dropout",
        kind: float(0.0, true, 1.0, false),
        empty: None,
        help: "Randomly drops adapter inputs while training, against overfitting.",
    },
    Setting {
        name: "warmup",
        label: "Warm-up steps",
        kind: int(0, MAX_STEPS),
        empty: None,
        help: "Steps over which the learning rate rises linearly from 0.",
    },
    Setting {
        name: "schedule",
        label: "Schedule",
        kind: Kind::Choice {
            choices: &["cosine", "linear", "constant"],
        },
        empty: None,
        help: "How the learning rate decays after warm-up.",
    },
    Setting {
        name: "max-grad-norm",
        label: "Gradient clip",
        kind: float(0.0, true, 1e6, true),
        empty: None,
        help: "Clip the global gradient norm to this (0 = off).",
    },
    Setting {
        name: "weight-decay",
        label: "Weight decay",
        kind: float(0.0, true, 1.0, true),
        empty: None,
        help: "AdamW's decoupled weight decay on the adapter.",
    },
    Setting {
        name: "rslora",
        label: "rsLoRA",
        kind: Kind::Flag,
        empty: None,
        help: "Scale updates by alpha / sqrt(rank) instead of alpha / rank.",
    },
    Setting {
        name: "keep-activations",
        label: "Keep activations",
        kind: Kind::Flag,
        empty: None,
        help: "Keep every layer's activations for the backward pass: about a third faster, several times the memory.",
    },
    Setting {
        name: "seed",
        label: "Seed",
        kind: int(0, u32::MAX as u64),
        empty: None,
        help: "Same seed, data and settings give the same adapter.",
    },
    Setting {
        name: "validation",
        label: "Validation share",
        kind: float(0.0, true, 0.9, false),
        empty: None,
        help: "Share of examples held out to check the adapter generalises (none when under 5).",
    },
    Setting {
        name: "eval-every",
        label: "Validate every",
        kind: int(0, MAX_STEPS),
        empty: None,
        help: "Steps between validation losses during training (0 = before and after only).",
    },
    Setting {
        name: "patience",
        label: "Early stopping patience",
        kind: int(0, 10_000),
        empty: None,
        help: "Stop when this many validations in a row do not beat the best validation loss (0 = never); needs Validate every.",
    },
    Setting {
        name: "sample-every",
        label: "Sample every",
        kind: int(0, MAX_STEPS),
        empty: None,
        help: "Steps between replies to a few prompts (yours, else held-out examples'), to see the model change (0 = none).",
    },
    Setting {
        name: "save-every",
        label: "Checkpoint every",
        kind: int(0, MAX_STEPS),
        empty: None,
        help: "Steps between checkpoints a run can resume from (0 = only on pause, stop or interruption).",
    },
    Setting {
        name: "targets",
        label: "Targets",
        kind: Kind::Targets {
            choices: &["q", "k", "v", "o", "gate", "up", "down"],
        },
        empty: None,
        help: "Which projections get an adapter.",
    },
];

/// The setting called `name`.
pub fn setting(name: &str) -> Result<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        Error::setting(
            name,
            format!("is not a setting; the settings are {}", names.join(", ")),
        )
    })
}

/// The setting's key in [`RunSettings`]' serialised form.
fn key(name: &str) -> String {
    name.replace('-', "_")
}

impl Setting {
    /// What the allowed values are, in words.
    pub fn allowed(&self) -> String {
        match self.kind {
            Kind::Int { min, max } => format!("a whole number from {min} to {max}"),
            Kind::Float {
                min,
                min_included,
                max,
                max_included,
            } => format!(
                "a number in {}{min}, {max}{}",
                if min_included { '[' } else { '(' },
                if max_included { ']' } else { ')' }
            ),
            Kind::Flag => "true or false".into(),
            Kind::Choice { choices } => format!("one of {}", choices.join(", ")),
            Kind::Targets { choices } => format!("`all` or a comma list of {}", choices.join(", ")),
        }
    }

    fn refuse(&self, shown: impl std::fmt::Display) -> Error {
        Error::setting(self.name, format!("{shown} is not {}", self.allowed()))
    }

    /// The value a person typed, checked: `Null` for an empty optional one.
    pub fn parse(&self, text: &str) -> Result<Value> {
        let t = text.trim();
        if t.is_empty() {
            return match self.empty {
                Some(_) => Ok(Value::Null),
                None => Err(Error::setting(
                    self.name,
                    format!("is empty; give {}", self.allowed()),
                )),
            };
        }
        let shown = format!("`{t}`");
        let value = match self.kind {
            Kind::Int { .. } => t
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| self.refuse(&shown))?,
            Kind::Float { .. } => match t.parse::<f64>() {
                Ok(x) if x.is_finite() => Value::from(x),
                _ => return Err(self.refuse(&shown)),
            },
            Kind::Flag => match t {
                "true" | "on" | "1" => Value::Bool(true),
                "false" | "off" | "0" => Value::Bool(false),
                _ => return Err(self.refuse(&shown)),
            },
            Kind::Choice { .. } | Kind::Targets { .. } => Value::from(t),
        };
        self.check(&value, &shown)?;
        Ok(value)
    }

    /// Checks a value already typed (a number, a string, `Null` when the
    /// setting may be empty) against the allowed range.
    fn check(&self, value: &Value, shown: &str) -> Result<()> {
        let ok = match (self.kind, value) {
            (_, Value::Null) => self.empty.is_some(),
            (Kind::Int { min, max }, v) => v.as_u64().is_some_and(|x| (min..=max).contains(&x)),
            (
                Kind::Float {
                    min,
                    min_included,
                    max,
                    max_included,
                },
                v,
            ) => v.as_f64().is_some_and(|x| {
                (x > min || (min_included && x == min)) && (x < max || (max_included && x == max))
            }),
            (Kind::Flag, v) => v.is_boolean(),
            (Kind::Choice { choices }, Value::String(s)) => choices.contains(&s.as_str()),
            (Kind::Targets { .. }, Value::String(s)) => {
                Target::parse_list(s)?;
                true
            }
            _ => false,
        };
        if ok { Ok(()) } else { Err(self.refuse(shown)) }
    }

    /// This setting's value in `settings`, as the CLI and the page show it
    /// (empty for an optional setting left empty).
    pub fn value_text(&self, settings: &RunSettings) -> String {
        match serialised(settings).get(&key(self.name)) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        }
    }
}

fn serialised(settings: &RunSettings) -> Map<String, Value> {
    match serde_json::to_value(settings) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// A setting as the page needs it to build its form: the description and
/// the default, as text.
#[derive(Debug, Clone, Serialize)]
pub struct SettingView {
    /// The description.
    #[serde(flatten)]
    pub setting: Setting,
    /// The default value as text (empty for an optional setting).
    pub default: String,
}

/// Every setting with its default, for the page's form.
pub fn views() -> Vec<SettingView> {
    let defaults = RunSettings::default();
    SETTINGS
        .iter()
        .map(|s| SettingView {
            setting: *s,
            default: s.value_text(&defaults),
        })
        .collect()
}

/// A value a form holds that its setting refuses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// The setting (`settings` for a rule between settings).
    pub name: String,
    /// Why, naming the setting.
    pub message: String,
}

/// Checks a form's values one field at a time, then together (when each is
/// fine alone), so a page can mark every wrong field at once.
pub fn check_form<'a>(
    values: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
) -> Vec<FieldError> {
    let mut errors: Vec<FieldError> = values
        .clone()
        .into_iter()
        .filter_map(|(name, text)| {
            let e = setting(name).and_then(|s| s.parse(text)).err()?;
            Some(FieldError {
                name: name.to_string(),
                message: e.to_string(),
            })
        })
        .collect();
    if errors.is_empty()
        && let Err(e) = RunSettings::from_text(values)
    {
        errors.push(FieldError {
            name: "settings".into(),
            message: e.to_string(),
        });
    }
    errors
}

impl RunSettings {
    /// Settings from a person's text, `(name, value)` pairs named as in
    /// [`SETTINGS`]; settings not given keep their defaults. Every value is
    /// checked, and a wrong one is refused naming the setting.
    pub fn from_text<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut map = serialised(&RunSettings::default());
        for (name, text) in pairs {
            let s = setting(name)?;
            map.insert(key(s.name), s.parse(text)?);
        }
        let settings: RunSettings = serde_json::from_value(Value::Object(map))
            .map_err(|e| Error::setting("settings", e))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value against its setting's range (for settings that
    /// came in as JSON rather than text), then the run's own rules.
    pub(crate) fn check_ranges(&self) -> Result<()> {
        let map = serialised(self);
        for s in SETTINGS {
            let value = map.get(&key(s.name)).unwrap_or(&Value::Null);
            s.check(value, &format!("`{value}`"))?;
        }
        Ok(())
    }
}

/// A named set of settings for a kind of run. The settings it does not
/// name keep their defaults, and settings given beside it win.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Preset {
    /// The CLI's `--preset` value.
    pub name: &'static str,
    /// What the page calls it.
    pub label: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Its settings, `(name, value)` as typed.
    pub values: &'static [(&'static str, &'static str)],
}

/// The presets, in the order the page offers them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "lesson",
        label: "Quick lesson",
        help: "A short run on a small data set that visibly changes the model, with replies to your prompts every few steps.",
        values: &[
            ("lr", "1e-3"),
            ("epochs", "3"),
            ("warmup", "0"),
            ("schedule", "cosine"),
            ("sample-every", "6"),
        ],
    },
    Preset {
        name: "careful",
        label: "Careful run",
        help: "A longer run for real data (100 examples or more): a lower rate, 10 warm-up steps, cosine decay, validation every 10 steps, early stopping after 3 without improvement, the best adapter kept.",
        values: &[
            ("lr", "2e-4"),
            ("epochs", "3"),
            ("warmup", "10"),
            ("schedule", "cosine"),
            ("validation", "0.1"),
            ("eval-every", "10"),
            ("patience", "3"),
        ],
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        Error::setting(
            "preset",
            format!(
                "`{name}` is not a preset; the presets are {}",
                names.join(", ")
            ),
        )
    })
}

/// A preset as the page needs it: every setting's value under it, as text.
#[derive(Debug, Clone, Serialize)]
pub struct PresetView {
    /// The preset.
    #[serde(flatten)]
    pub preset: Preset,
    /// Every setting's value with the preset (its own or the default).
    pub settings: Map<String, Value>,
}

/// Every preset with all its settings, for the page.
pub fn preset_views() -> Result<Vec<PresetView>> {
    PRESETS
        .iter()
        .map(|p| {
            let settings = RunSettings::from_text(p.values.iter().copied())?;
            let all = SETTINGS
                .iter()
                .map(|s| (s.name.to_string(), Value::from(s.value_text(&settings))))
                .collect();
            Ok(PresetView {
                preset: *p,
                settings: all,
            })
        })
        .collect()
}

impl RunSettings {
    /// [`RunSettings::from_text`] over `preset`'s settings, then `pairs`
    /// (which win).
    pub fn from_preset<'a>(
        preset: Option<&'static Preset>,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        let base = preset.map_or(&[][..], |p| p.values);
        Self::from_text(base.iter().copied().chain(pairs))
    }
}
