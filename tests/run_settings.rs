//! The settings a person gives (CLI flags or the page's form) become the
//! trainer's and the adapter's configs, checked, with the same defaults.

use tabtune::lora::{LoraConfig, Target};
use tabtune::train::setting::{Kind, SETTINGS, Setting, check_form};
use tabtune::train::{RunSettings, Schedule, TrainConfig};

fn from_json(json: &str) -> Result<RunSettings, serde_json::Error> {
    serde_json::from_str(json)
}

#[test]
fn missing_fields_take_the_cli_defaults() {
    let s = from_json("{}").expect("empty object is fine");
    assert_eq!(s, RunSettings::default());
    assert_eq!(s.lora().expect("valid"), LoraConfig::default());
    let t = s.train(10).expect("valid");
    let d = TrainConfig::default();
    assert_eq!(
        (t.lr, t.batch_size, t.seq_len, t.seed),
        (d.lr, d.batch_size, d.seq_len, d.seed)
    );
    assert_eq!(t.schedule, Schedule::Cosine);
}

#[test]
fn without_steps_the_run_lasts_the_given_epochs_rounded_up() {
    let s = from_json(r#"{"epochs": 2, "batch": 4, "grad_accum": 2}"#).expect("parses");
    assert_eq!(s.train(10).expect("valid").steps, 3, "ceil(2*10/8)");
    assert_eq!(
        s.train(3).expect("valid").steps,
        1,
        "batch is capped by the data"
    );
    let s = from_json(r#"{"steps": 7, "epochs": 100}"#).expect("parses");
    assert_eq!(
        s.train(10).expect("valid").steps,
        7,
        "steps win over epochs"
    );
}

#[test]
fn a_misspelt_setting_is_refused_rather_than_ignored() {
    let err = from_json(r#"{"rnak": 4}"#).expect_err("unknown field");
    assert!(err.to_string().contains("unknown field `rnak`"), "{err}");
}

#[test]
fn bad_values_name_the_setting() {
    let cases = [
        (r#"{"rank": 0}"#, "setting `rank`"),
        (r#"{"lr": 2}"#, "setting `lr`"),
        (r#"{"dropout": 1.5}"#, "setting `dropout`"),
        (r#"{"schedule": "step"}"#, "setting `schedule`"),
        (r#"{"targets": "q,lm_head"}"#, "setting `targets`"),
        (r#"{"steps": 0}"#, "setting `steps`"),
        (r#"{"epochs": 0}"#, "setting `epochs`"),
        (r#"{"seq_len": 1}"#, "setting `seq-len`"),
    ];
    for (json, want) in cases {
        let err = from_json(json).expect("parses").validate().expect_err(json);
        assert!(err.to_string().starts_with(want), "{json}: {err}");
    }
}

#[test]
fn targets_parse_into_the_lora_config() {
    let s = from_json(r#"{"targets": "q,v,down", "rank": 4, "alpha": 8, "rslora": true}"#)
        .expect("parses");
    let l = s.lora().expect("valid");
    assert_eq!(l.targets, vec![Target::Q, Target::V, Target::Down]);
    assert_eq!((l.rank, l.alpha, l.use_rslora), (4, 8.0, true));
}

#[test]
fn the_validation_share_is_checked_and_tiny_sets_are_not_split() {
    let err = from_json(r#"{"validation": 0.95}"#)
        .expect("parses")
        .validate()
        .expect_err("too large");
    assert!(err.to_string().starts_with("setting `validation`"), "{err}");
    let ex = |i: u32| tabtune::data::Example {
        ids: vec![i, i + 1],
        trained: vec![false, true],
    };
    let (train, val) = tabtune::data::split((0..40).map(ex).collect(), 0.1, 42);
    assert_eq!((train.len(), val.len()), (40, 0), "4 would be too few");
    let (train, val) = tabtune::data::split((0..100).map(ex).collect(), 0.1, 42);
    assert_eq!((train.len(), val.len()), (90, 10));
    let (_, again) = tabtune::data::split((0..100).map(ex).collect(), 0.1, 42);
    assert_eq!(val, again, "the seed fixes the split");
    let (_, other) = tabtune::data::split((0..100).map(ex).collect(), 0.1, 7);
    assert_ne!(val, other);
    let mut all: Vec<u32> = train.iter().chain(&val).map(|e| e.ids[0]).collect();
    all.sort();
    assert_eq!(
        all,
        (0..100).collect::<Vec<_>>(),
        "nothing lost, nothing twice"
    );
}

/// Values a setting must refuse, from its kind: empty, negative, NaN,
/// infinite, 2^32, words, a fraction where a whole number is needed, and
/// just past each end of its range.
fn bad_values(s: &Setting) -> Vec<String> {
    let mut v: Vec<String> = ["", "-1", "NaN", "4294967296", "abc"]
        .map(String::from)
        .to_vec();
    match s.kind {
        Kind::Int { min, max } => {
            v.push("0.5".into());
            if min > 0 {
                v.push((min - 1).to_string());
            }
            v.push((max + 1).to_string());
        }
        Kind::Float {
            min,
            min_included,
            max,
            max_included,
        } => {
            v.push("inf".into());
            if !min_included {
                v.push(min.to_string());
            }
            if !max_included {
                v.push(max.to_string());
            }
            v.push((max * 2.0 + 1.0).to_string());
        }
        Kind::Choice { .. } => v.push("nope".into()),
        Kind::Targets { .. } => v.extend(["lm_head".into(), "q,nope".into()]),
        Kind::Flag => return vec!["maybe".into(), "2".into()],
    }
    if s.empty.is_some() {
        v.retain(|x| !x.is_empty());
    }
    v
}

#[test]
fn every_setting_refuses_values_out_of_its_range_naming_it() {
    let mut checked = 0;
    for s in SETTINGS {
        for bad in bad_values(s) {
            let err = RunSettings::from_text([(s.name, bad.as_str())]).expect_err(&bad);
            let want = format!("setting `{}`", s.name);
            assert!(
                err.to_string().starts_with(&want),
                "{} = {bad:?}: {err}",
                s.name
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked} values checked");
}

#[test]
fn every_default_reads_back_as_itself() {
    let defaults = RunSettings::default();
    let text: Vec<(&str, String)> = SETTINGS
        .iter()
        .map(|s| (s.name, s.value_text(&defaults)))
        .collect();
    let back = RunSettings::from_text(text.iter().map(|(n, v)| (*n, v.as_str()))).expect("valid");
    assert_eq!(back, defaults);
    let err = RunSettings::from_text([("rnak", "4")]).expect_err("unknown");
    assert!(
        err.to_string()
            .starts_with("setting `rnak`: is not a setting"),
        "{err}"
    );
}

#[test]
fn the_cli_refuses_every_bad_value_before_loading_anything() {
    let mut checked = 0;
    for s in SETTINGS.iter().filter(|s| s.kind != Kind::Flag) {
        for bad in bad_values(s) {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_tabtune"))
                .args([
                    "train",
                    "--model",
                    "/nonexistent/model.gguf",
                    "--data",
                    "/nonexistent/d.jsonl",
                ])
                .args(["--out", "/nonexistent/out"])
                .arg(format!("--{}", s.name))
                .arg(&bad)
                .output()
                .expect("runs");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "--{} {bad:?} was taken", s.name);
            let want = format!("error: setting `{}`", s.name);
            assert!(err.starts_with(&want), "--{} {bad:?}: {err}", s.name);
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked} values checked");
}

#[test]
fn a_form_check_marks_every_wrong_field_at_once() {
    let form = [
        ("rank", "0"),
        ("lr", "0.001"),
        ("batch", "0.5"),
        ("steps", ""),
    ];
    let errors = check_form(form);
    let names: Vec<&str> = errors.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["rank", "batch"]);
    assert!(
        errors[1]
            .message
            .starts_with("setting `batch`: `0.5` is not a whole number")
    );
    assert!(check_form([("rank", "4"), ("steps", "")]).is_empty());
}
