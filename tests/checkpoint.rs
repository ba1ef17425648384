//! Checkpoints and resume (`train::checkpoint`, `Session::checkpoint`,
//! `Session::resume_from`) and the guard against steps whose loss is not a
//! finite number. A run stopped at a checkpoint and resumed in a fresh
//! session (the page after a reload, the CLI after Ctrl-C) takes the very
//! steps the uninterrupted run takes: equal losses, gradient norms,
//! validation losses and adapter bytes.
//!
//! The tests here train one at a time: dropout draws from burn-flex's
//! process-wide generator, reseeded before every block.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::tiny_model_dir;
use tabtune::data::BadLines;
use tabtune::readback::block_on;
use tabtune::train::checkpoint;
use tabtune::train::session::MAX_BAD_STEPS;
use tabtune::train::{Progress, RunSettings, RunStatus, Session};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Settings with a held-out share, a validation loss every 2 steps (so a
/// best adapter), samples every 3 steps, dropout (the default) and
/// accumulation, so every part of a run's state shows in its numbers.
const SETTINGS: [(&str, &str); 8] = [
    ("sample-every", "3"),
    ("steps", "6"),
    ("batch", "2"),
    ("grad-accum", "2"),
    ("seq-len", "64"),
    ("validation", "0.25"),
    ("eval-every", "2"),
    ("lr", "0.01"),
];

fn sample_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("www/samples/chat.jsonl")
}

/// A session with the model in `dir` loaded and `data` (JSONL text) read,
/// as the page has it after a reload and the person's choices.
fn session(dir: &Path, data: &str) -> Session {
    common::tiny_session(dir, "chat.jsonl", data.as_bytes())
}

fn advance(s: &mut Session) -> Progress {
    block_on(s.advance()).expect("advances")
}

/// Every progress until the run finishes.
fn to_the_end(s: &mut Session) -> Vec<Progress> {
    let mut all = Vec::new();
    loop {
        let p = advance(s);
        let done = matches!(p, Progress::Finished { .. });
        all.push(p);
        if done {
            return all;
        }
    }
}

fn best_bytes(s: &Session) -> Vec<u8> {
    block_on(s.export_best("tiny"))
        .expect("exports the best")
        .peft
        .safetensors
}

fn adapter_bytes(s: &Session) -> Vec<u8> {
    block_on(s.export("tiny"))
        .expect("exports")
        .peft
        .safetensors
}

#[test]
fn a_run_stopped_at_a_checkpoint_and_resumed_in_a_new_session_takes_the_same_steps_bit_for_bit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tiny_model_dir("tabtune-checkpoint-resume");
    let data = std::fs::read_to_string(sample_data()).expect("sample data");
    let settings = RunSettings::from_text(SETTINGS).expect("valid");

    let mut whole = session(&dir, &data);
    whole.start(&settings, BadLines::Skip).expect("starts");
    let uninterrupted = to_the_end(&mut whole);
    let want_adapter = adapter_bytes(&whole);
    let want_best = best_bytes(&whole);
    let kinds: Vec<&str> = uninterrupted
        .iter()
        .map(|p| match p {
            Progress::Validation(_) => "validation",
            Progress::Samples(_) => "samples",
            Progress::Step { .. } => "step",
            _ => "end",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "validation",
            "samples",
            "step",
            "step",
            "validation",
            "step",
            "samples",
            "step",
            "validation",
            "step",
            "step",
            "validation",
            "samples",
            "end"
        ]
    );
    let all = uninterrupted.len();

    // Checkpoints at each point of a run's life: before anything, with
    // samples due (before the first step, after step 3), between steps,
    // with a validation loss due (after step 2 and step 4), after the last
    // validation loss (the stop check due), after the stop check, and once
    // the end was reported (resumed, the run reports its end again, with
    // its adapter).
    for stop_after in [0, 1, 2, 4, 5, 6, 7, 11, 12, 13, all] {
        let mut first = session(&dir, &data);
        first.start(&settings, BadLines::Skip).expect("starts");
        let mut seen = Vec::new();
        for _ in 0..stop_after {
            seen.push(advance(&mut first));
        }
        let saved = block_on(first.checkpoint()).expect("checkpoints");
        drop(first);

        let mut again = session(&dir, &data);
        let info = again
            .resume_from("state.safetensors", &saved.bytes)
            .expect("resumes");
        assert_eq!(info.resumed_at, saved.step);
        assert_eq!(info.steps, 6);
        let rest = to_the_end(&mut again);
        if stop_after == all {
            seen.pop();
        }
        seen.extend(rest);
        assert_eq!(
            seen, uninterrupted,
            "stopped after {stop_after} advances and resumed, the run goes on exactly"
        );
        assert_eq!(
            adapter_bytes(&again),
            want_adapter,
            "the same adapter, byte for byte (stopped after {stop_after} advances)"
        );
        assert_eq!(
            best_bytes(&again),
            want_best,
            "the same best adapter (stopped after {stop_after} advances)"
        );
        assert_eq!(
            again.history().len(),
            6,
            "the history holds the steps before the checkpoint too"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_goes_on_only_with_its_own_model_and_data() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tiny_model_dir("tabtune-checkpoint-refuse");
    let data = std::fs::read_to_string(sample_data()).expect("sample data");
    let settings = RunSettings::from_text(SETTINGS).expect("valid");
    let mut s = session(&dir, &data);
    s.start(&settings, BadLines::Skip).expect("starts");
    advance(&mut s);
    advance(&mut s);
    let saved = block_on(s.checkpoint()).expect("checkpoints");

    // The data file with one example fewer.
    let fewer: String = data.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let mut other = session(&dir, &fewer);
    let e = other
        .resume_from("state.safetensors", &saved.bytes)
        .expect_err("other data is refused")
        .to_string();
    assert!(
        e.contains("is different") && e.contains("24 examples") && e.contains("23 examples"),
        "{e}"
    );
    assert_eq!(other.status(), RunStatus::Idle, "no run was started");

    // Another model: the same files with one weight changed.
    let changed = std::env::temp_dir().join(format!(
        "tabtune-checkpoint-other-model-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&changed).expect("mkdir");
    for (name, mut bytes) in common::folder_files(&dir) {
        if name == "model.safetensors" {
            let at = bytes.len() - 2;
            bytes[at] ^= 1;
        }
        std::fs::write(changed.join(name), bytes).expect("writes");
    }
    let mut other = session(&changed, &data);
    let e = other
        .resume_from("state.safetensors", &saved.bytes)
        .expect_err("another model is refused")
        .to_string();
    assert!(e.contains("another file"), "{e}");

    // Not a checkpoint at all.
    let e = session(&dir, &data)
        .resume_from("notes.txt", b"hello")
        .expect_err("refused")
        .to_string();
    assert!(e.starts_with("notes.txt: not a tabtune checkpoint"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&changed);
}

/// Rewrites `model.safetensors` in `dir` with `edit` applied to the f32
/// tensor `name`.
fn edit_weight(dir: &Path, name: &str, edit: impl Fn(&mut [f32])) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("reads");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parses");
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let (_, _, data) = tensors
        .iter_mut()
        .find(|(n, _, _)| n == name)
        .expect("the tensor");
    let mut values: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    edit(&mut values);
    *data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .expect("view");
            (n.clone(), view)
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).expect("writes")).expect("writes");
}

#[test]
fn steps_whose_loss_is_not_finite_are_skipped_and_the_run_stops_with_the_adapter_it_had() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A damaged model file: one weight of the last MLP is NaN, so every
    // loss is NaN from the first step.
    let dir = tiny_model_dir("tabtune-checkpoint-nan");
    edit_weight(&dir, "model.layers.1.mlp.down_proj.weight", |w| {
        w[3] = f32::NAN
    });
    let data = std::fs::read_to_string(sample_data()).expect("sample data");
    let mut s = session(&dir, &data);
    s.start(
        &RunSettings::from_text([("steps", "10"), ("seq-len", "64"), ("validation", "0")])
            .expect("valid"),
        BadLines::Skip,
    )
    .expect("starts");
    let before = adapter_bytes(&s);
    let progress = to_the_end(&mut s);
    let steps: Vec<_> = progress
        .iter()
        .filter_map(|p| match p {
            Progress::Step { report, .. } => Some(report.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), MAX_BAD_STEPS, "it stops after {MAX_BAD_STEPS}");
    assert!(steps.iter().all(|r| r.skipped && r.loss.is_nan()));
    let Some(Progress::Finished {
        stopped: true,
        steps: 3,
        reason: Some(reason),
        ..
    }) = progress.last()
    else {
        panic!("{:?}", progress.last());
    };
    assert!(
        reason.starts_with("steps 1 to 3 had a loss or gradient norm that is not a finite number")
            && reason.contains("after step 0")
            && reason.contains("the model file may be damaged"),
        "{reason}"
    );
    assert_eq!(s.status(), RunStatus::Stopped);
    // No update was taken: the adapter is the one the run started with, and
    // it exports.
    assert_eq!(adapter_bytes(&s), before);
    // Its checkpoint keeps the NaN losses and the reason, and resumed it
    // reports the same end.
    let saved = block_on(s.checkpoint()).expect("checkpoints");
    let mut again = session(&dir, &data);
    again
        .resume_from("state.safetensors", &saved.bytes)
        .expect("resumes");
    assert!(again.history().iter().all(|r| r.loss.is_nan() && r.skipped));
    assert_eq!(
        advance(&mut again),
        progress.last().cloned().expect("an end")
    );
    assert_eq!(adapter_bytes(&again), before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_adapter_holding_a_nan_is_never_exported() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tiny_model_dir("tabtune-checkpoint-nan-export");
    let data = std::fs::read_to_string(sample_data()).expect("sample data");
    let settings = RunSettings::from_text(SETTINGS).expect("valid");
    let mut s = session(&dir, &data);
    s.start(&settings, BadLines::Skip).expect("starts");
    advance(&mut s);
    let saved = block_on(s.checkpoint()).expect("checkpoints");
    // A checkpoint whose factors hold one NaN (written by hand: training
    // itself never keeps one).
    let (record, mut state) = checkpoint::read("state", &saved.bytes).expect("reads");
    state.params[7] = f32::NAN;
    let bad = checkpoint::write(record, state, None).expect("writes");
    let mut s = session(&dir, &data);
    s.resume_from("state.safetensors", &bad.bytes)
        .expect("resumes");
    let e = block_on(s.export("tiny"))
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("not finite numbers"), "{e}");
    assert!(block_on(s.export_gguf_zip(None)).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tabtune(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tabtune"));
    cmd.args(args);
    cmd
}

fn steps_logged(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"kind\":\"step\""))
        .count()
}

#[test]
fn tabtune_train_stopped_by_ctrl_c_writes_a_checkpoint_that_resume_finishes_into_the_same_adapter()
{
    let dir = tiny_model_dir("tabtune-checkpoint-cli");
    let model = dir.to_string_lossy().into_owned();
    let data = sample_data().to_string_lossy().into_owned();
    let out = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let run = ["--steps", "40", "--seq-len", "64", "--save-every", "10"];

    // Uninterrupted: a checkpoint every 10 steps, the 2 latest kept.
    let whole = out("whole");
    let o = tabtune(&["train", "--model", &model, "--data", &data, "--out", &whole])
        .args(run)
        .args(["--keep-checkpoints", "2"])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut kept: Vec<String> = std::fs::read_dir(&whole)
        .expect("lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint"))
        .collect();
    kept.sort();
    assert_eq!(kept, ["checkpoint-20", "checkpoint-30"]);
    for file in [
        "state.safetensors",
        "adapter_model.safetensors",
        "adapter_config.json",
        "README.md",
    ] {
        assert!(Path::new(&whole).join("checkpoint-30").join(file).is_file());
    }

    // Ctrl-C after a few steps: a checkpoint, then exit status 130.
    let cut = out("cut");
    let log = dir.join("cut.log");
    let child = tabtune(&["train", "--model", &model, "--data", &data, "--out", &cut])
        .args(run)
        .arg("--log")
        .arg(&log)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let t0 = std::time::Instant::now();
    while steps_logged(&log) < 3 {
        assert!(t0.elapsed().as_secs() < 120, "no steps logged");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: sends SIGINT to the child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let o = child.wait_with_output().expect("ends");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted after step"), "{stderr}");
    let taken = steps_logged(&log);
    assert!(taken < 40, "stopped early: {taken}");
    assert!(
        Path::new(&cut)
            .join(format!("checkpoint-{taken}"))
            .join("state.safetensors")
            .is_file(),
        "{stderr}"
    );

    // A new run into the same --out is refused: its checkpoints are the
    // earlier run's.
    let o = tabtune(&["train", "--model", &model, "--data", &data, "--out", &cut])
        .args(run)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains(&format!(
            "holds checkpoints of an earlier run (up to checkpoint-{taken})"
        )),
        "{stderr}"
    );

    // Settings beside --resume are refused: the run's are the checkpoint's.
    let o = tabtune(&["train", "--model", &model, "--data", &data, "--out", &cut])
        .args(["--resume", &cut, "--lr", "0.1"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("setting `lr`: --resume goes on"),
        "{stderr}"
    );

    // Resumed from the run's directory (its latest checkpoint): the
    // uninterrupted run's adapter, byte for byte.
    let o = tabtune(&["train", "--model", &model, "--data", &data, "--out", &cut])
        .args(["--resume", &cut])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("after step {taken}")), "{stderr}");
    let adapter =
        |d: &str| std::fs::read(Path::new(d).join("adapter_model.safetensors")).expect("adapter");
    assert_eq!(adapter(&cut), adapter(&whole));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tabtune_train_refuses_an_out_it_cannot_write_before_loading_the_model() {
    let dir = std::env::temp_dir().join(format!("tabtune-checkpoint-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("a-file");
    std::fs::write(&file, b"").expect("writes");
    let out = file.join("adapter");
    // The model does not exist: the out directory is checked first.
    let o = tabtune(&[
        "train",
        "--model",
        "no-such-model.gguf",
        "--data",
        "x.jsonl",
    ])
    .arg("--out")
    .arg(&out)
    .output()
    .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("cannot write here"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
