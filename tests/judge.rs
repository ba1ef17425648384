//! Judging a run while it runs (`train::judge` through `Session`): early
//! stopping with patience, the best adapter by validation loss, samples
//! every K steps from the person's or held-out prompts, and the stop check
//! after training; and the settings that need them refused when they cannot
//! act. Dropout is off in these runs, so no test draws from burn-flex's
//! process-wide generator; a lock keeps the runs apart all the same.

mod common;

use std::path::Path;
use std::sync::Mutex;

use common::tiny_model_dir;
use tabtune::data::BadLines;
use tabtune::readback::block_on;
use tabtune::train::judge::{self, Samples, Source};
use tabtune::train::session::When;
use tabtune::train::{Progress, RunSettings, Session};

static ONE_RUN: Mutex<()> = Mutex::new(());

fn chat_data() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("www/samples/chat.jsonl")
}

/// A session on the tiny model with `data` read (sequence length 64).
fn session(tag: &str, data: &Path) -> Session {
    let dir = tiny_model_dir(tag);
    let reader = std::io::BufReader::new(std::fs::File::open(data).expect("opens"));
    let name = data.file_name().and_then(|n| n.to_str()).expect("a name");
    let s = common::tiny_session(&dir, name, reader);
    let _ = std::fs::remove_dir_all(&dir);
    s
}

fn settings(extra: &[(&str, &str)]) -> RunSettings {
    let base = [("batch", "2"), ("seq-len", "64"), ("dropout", "0")];
    RunSettings::from_text(base.iter().chain(extra).copied()).expect("valid settings")
}

/// Every progress until the end, the end included.
fn run_out(s: &mut Session) -> Vec<Progress> {
    let mut all = Vec::new();
    loop {
        let p = block_on(s.advance()).expect("advances");
        let end = matches!(p, Progress::Finished { .. });
        all.push(p);
        if end {
            return all;
        }
    }
}

fn adapter_weights(s: &Session, best: bool) -> Vec<u8> {
    let files = match best {
        true => block_on(s.export_best("tiny")),
        false => block_on(s.export("tiny")),
    };
    files.expect("exports").peft.safetensors
}

#[test]
fn early_stopping_ends_the_run_when_patience_runs_out_and_keeps_the_best_adapter() {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    // A learning rate this high overshoots: the held-out loss soon rises.
    let chosen = [
        ("steps", "40"),
        ("lr", "0.05"),
        ("schedule", "constant"),
        ("validation", "0.25"),
        ("eval-every", "1"),
        ("patience", "2"),
    ];
    let mut s = session("tabtune-judge-early", &chat_data());
    s.start(&settings(&chosen), BadLines::Skip).expect("starts");
    let progress = run_out(&mut s);
    let during: Vec<(usize, f64)> = s
        .validations()
        .iter()
        .filter(|v| v.when == When::During)
        .map(|v| (v.step, v.loss))
        .collect();

    // Replayed by hand: the first step whose validation and the one before
    // it are both no lower than the best before them.
    let mut best = (0, f64::INFINITY);
    let mut since = 0;
    let mut expect_stop = None;
    for &(step, loss) in &during {
        if loss < best.1 {
            best = (step, loss);
            since = 0;
        } else {
            since += 1;
        }
        if since == 2 {
            expect_stop = Some((step, best));
            break;
        }
    }
    let (stop_step, (best_step, best_loss)) =
        expect_stop.expect("the held-out loss rose twice in a row within 40 steps");
    let Some(Progress::Finished {
        stopped: true,
        steps,
        reason: None,
        early: Some(early),
    }) = progress.last()
    else {
        panic!("not stopped early: {:?}", progress.last());
    };
    assert_eq!(*steps, stop_step, "it stops at the validation that ran out");
    assert_eq!(
        (early.step, early.best_step, early.best_loss, early.patience),
        (stop_step, best_step, best_loss, 2)
    );
    assert!(early.message().contains(&format!("at step {best_step}")));
    assert_eq!(
        during.last().map(|d| d.0),
        Some(stop_step),
        "no validation after the stop but the one after"
    );
    let reported = s.best().expect("a best");
    assert_eq!((reported.step, reported.loss), (best_step, best_loss));

    // Its checkpoint, resumed: the run stays ended (early) with its best.
    let saved = block_on(s.checkpoint()).expect("checkpoints");
    let mut resumed = session("tabtune-judge-resumed", &chat_data());
    resumed
        .resume_from("state.safetensors", &saved.bytes)
        .expect("resumes");
    let end = block_on(resumed.advance()).expect("reports the end");
    assert!(
        matches!(&end, Progress::Finished { early: Some(e), .. } if e == early),
        "{end:?}"
    );
    assert_eq!(resumed.best(), s.best());
    assert_eq!(adapter_weights(&resumed, true), adapter_weights(&s, true));

    // The best adapter is the run's adapter at that step: a run of exactly
    // that many steps (constant rate, no dropout) ends with the same factors.
    let best_weights = adapter_weights(&s, true);
    let card = block_on(s.export_best("tiny")).expect("best").card;
    assert!(
        card.contains(&format!("| steps | {best_step} of 40 |")),
        "{card}"
    );
    assert_ne!(
        best_weights,
        adapter_weights(&s, false),
        "the last is not the best"
    );
    let mut short = session("tabtune-judge-short", &chat_data());
    let steps_text = best_step.to_string();
    let mut again = chosen.to_vec();
    again[0] = ("steps", &steps_text);
    again.retain(|(n, _)| *n != "patience");
    short
        .start(&settings(&again), BadLines::Skip)
        .expect("starts");
    run_out(&mut short);
    assert_eq!(best_weights, adapter_weights(&short, false));
}

fn samples_of(progress: &[Progress]) -> Vec<&Samples> {
    progress
        .iter()
        .filter_map(|p| match p {
            Progress::Samples(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn samples_reply_to_the_persons_prompts_every_k_steps_and_the_stop_check_asks_held_out_ones() {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = session("tabtune-judge-samples", &chat_data());
    let prompts = vec![
        "What is the capital of Italy?".to_string(),
        "Hi!".to_string(),
    ];
    s.set_prompts(prompts.clone()).expect("fine prompts");
    let chosen = [
        ("steps", "5"),
        ("lr", "0.01"),
        ("validation", "0.25"),
        ("sample-every", "2"),
    ];
    let info = s.start(&settings(&chosen), BadLines::Skip).expect("starts");
    assert_eq!(
        (info.sample_prompts, info.sample_source, info.check_prompts),
        (2, Source::Yours, judge::CHECK_PROMPTS)
    );
    let mut progress = Vec::new();
    loop {
        let p = block_on(s.advance()).expect("advances");
        // Right away, before another step: the page's generation with the
        // adapter as it is gives each sample's reply (a second path).
        if let Progress::Samples(x) = &p
            && x.when != When::After
        {
            for sample in &x.samples {
                let tuned = x.when == When::During;
                let text =
                    block_on(s.generate(&sample.prompt, judge::SAMPLE_TOKENS, tuned, |_| Ok(())))
                        .expect("generates");
                assert_eq!(sample.reply.text, text, "step {}", x.step);
            }
        }
        let end = matches!(p, Progress::Finished { .. });
        progress.push(p);
        if end {
            break;
        }
    }
    let samples = samples_of(&progress);
    let at: Vec<(When, usize, Source)> =
        samples.iter().map(|x| (x.when, x.step, x.source)).collect();
    assert_eq!(
        at,
        [
            (When::Before, 0, Source::Yours),
            (When::During, 2, Source::Yours),
            (When::During, 4, Source::Yours),
            (When::After, 5, Source::HeldOut),
        ]
    );
    for x in &samples[..3] {
        let asked: Vec<&str> = x.samples.iter().map(|y| y.prompt.as_str()).collect();
        assert_eq!(asked, prompts, "the person's prompts, as written");
        assert_eq!(x.max_tokens, judge::SAMPLE_TOKENS);
    }
    // The stop check: held-out prompts shown as the person wrote them in
    // the data file, each reply within the longest answer of the data.
    let check = samples[3];
    let data = std::fs::read_to_string(chat_data()).expect("data");
    for y in &check.samples {
        assert!(
            data.contains(&format!("\"content\": \"{}\"", y.prompt)),
            "a question of the data file: {:?}",
            y.prompt
        );
        if !y.reply.ended {
            assert_eq!(y.reply.tokens, check.max_tokens, "cut at the limit");
        }
    }
    // The longest answer of the 24 conversations, counted from the tokens.
    let tok = s.tokenizer().expect("tokenizer");
    let longest = data
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let answer = v["messages"][1]["content"].as_str().expect("answer");
            // The answer's tokens and its end-of-turn token.
            tok.encode(answer, false).expect("encodes").len() + 1
        })
        .max()
        .expect("lines");
    assert!(
        check.max_tokens.abs_diff(longest) <= 2,
        "the check allows the longest answer: {} vs {longest}",
        check.max_tokens
    );
}

#[test]
fn settings_that_cannot_act_are_refused_with_what_to_change() {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let e = RunSettings::from_text([("patience", "2")]).expect_err("no eval-every");
    assert!(e.to_string().contains("eval-every"), "{e}");

    let mut s = session("tabtune-judge-refuse", &chat_data());
    // 24 examples, a share of 0.1: 2 held out, under 5, so none.
    let e = s
        .start(
            &settings(&[("eval-every", "2"), ("patience", "2")]),
            BadLines::Skip,
        )
        .expect_err("nothing held out");
    assert!(
        e.to_string().contains("patience") && e.to_string().contains("validation"),
        "{e}"
    );
    // Nothing held out and no prompts entered: samples reply to training
    // examples' prompts, and there is no stop check.
    let info = s
        .start(&settings(&[("sample-every", "2")]), BadLines::Skip)
        .expect("starts");
    assert_eq!(
        (info.sample_prompts, info.sample_source, info.check_prompts),
        (judge::SAMPLE_PROMPTS, Source::Training, 0)
    );
    // With prompts, samples and the stop check ask them.
    s.set_prompts(vec!["Hello?".into()]).expect("fine");
    let info = s
        .start(&settings(&[("sample-every", "2")]), BadLines::Skip)
        .expect("starts");
    assert_eq!((info.sample_source, info.check_prompts), (Source::Yours, 1));
    // One too long for the sequence length (64) is refused when the run starts.
    s.set_prompts(vec!["why ".repeat(100)])
        .expect("under 4,000 characters");
    let e = s
        .start(&settings(&[("sample-every", "2")]), BadLines::Skip)
        .expect_err("no room for an answer");
    assert!(
        e.to_string().contains("prompt 1 is")
            && e.to_string().contains("the sequence length is 64"),
        "{e}"
    );
    // Text data has no prompts: samples need the person's.
    let text = std::env::temp_dir().join(format!("tabtune-judge-{}.txt", std::process::id()));
    std::fs::write(
        &text,
        "Arr, the sea be wide.\n\nThe ship be fast and the wind be fair.\n",
    )
    .expect("writes");
    let mut t = session("tabtune-judge-text", &text);
    let e = t
        .start(&settings(&[("sample-every", "2")]), BadLines::Skip)
        .expect_err("no prompts");
    assert!(e.to_string().contains("enter a few sample prompts"), "{e}");
    t.set_prompts(vec!["The sea".into()]).expect("fine");
    let info = t
        .start(&settings(&[("sample-every", "2")]), BadLines::Skip)
        .expect("starts");
    assert_eq!(
        (info.sample_source, info.check_prompts),
        (Source::Yours, 0),
        "text has no answers to check"
    );
    // Resumed without the prompts (a reload, an empty box), it goes on
    // without samples rather than being refused.
    let saved = block_on(t.checkpoint()).expect("checkpoints");
    let mut again = session("tabtune-judge-text-again", &text);
    let info = again
        .resume_from("state.safetensors", &saved.bytes)
        .expect("resumes without prompts");
    assert_eq!(info.sample_prompts, 0);
    let _ = std::fs::remove_file(&text);

    let many = vec!["x".to_string(); judge::MAX_PROMPTS + 1];
    let e = s.set_prompts(many).expect_err("too many");
    assert!(e.to_string().contains("at most 8"), "{e}");
    let e = s
        .set_prompts(vec!["fine".into(), "  ".into()])
        .expect_err("empty");
    assert!(e.to_string().contains("prompt 2 is empty"), "{e}");
    let long = "a".repeat(judge::MAX_PROMPT_CHARS + 1);
    let e = s.set_prompts(vec![long]).expect_err("too long");
    assert!(e.to_string().contains("characters long"), "{e}");
    assert!(s.best().is_none());
    assert!(
        block_on(s.export_best("tiny")).is_err(),
        "no best before a validation"
    );
}

fn tabtune(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tabtune"))
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn tabtune_train_takes_a_preset_shows_samples_and_the_stop_check_and_writes_the_best_adapter() {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tiny_model_dir("tabtune-judge-cli");
    let out = dir.join("out");
    let log = dir.join("log.jsonl");
    let (model, data) = (dir.display().to_string(), chat_data().display().to_string());
    let (out_s, log_s) = (out.display().to_string(), log.display().to_string());
    // The lesson preset (samples every 6 steps) with flags that win over it.
    let o = tabtune(&[
        "train",
        "--model",
        &model,
        "--data",
        &data,
        "--out",
        &out_s,
        "--log",
        &log_s,
        "--preset",
        "lesson",
        "--steps",
        "7",
        "--batch",
        "2",
        "--seq-len",
        "64",
        "--validation",
        "0.25",
        "--eval-every",
        "2",
        "--dropout",
        "0",
        "--sample-prompt",
        "What is the capital of Italy?",
        "--sample-every",
        "3",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    let shown = format!("{stdout}{stderr}");
    for line in [
        "samples before training (your prompts):\n  > What is the capital of Italy?",
        "samples at step 3 (your prompts):",
        "samples at step 6 (your prompts):",
        "stop check: ",
        "of 5 held-out prompts ended with the end-of-turn token within",
        "the best adapter (validation loss",
    ] {
        assert!(shown.contains(line), "{line:?} in:\n{shown}");
    }
    assert!(
        !shown.contains("samples at step 7"),
        "none at the end: the stop check is"
    );
    let logged = std::fs::read_to_string(&log).expect("log");
    let kinds: Vec<String> = logged
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["kind"].to_string())
        .collect();
    // Before, steps 3 and 6 (--sample-every 3 wins over the preset's 6), the stop check.
    assert_eq!(kinds.iter().filter(|k| *k == "\"samples\"").count(), 4);
    let best = out.join("best");
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "README.md",
    ] {
        assert!(best.join(f).is_file(), "best/{f}");
    }
    // Its card gives the step the terminal named, and the preset's rate.
    let step = shown
        .split("the best adapter (validation loss ")
        .nth(1)
        .and_then(|rest| rest.split(" at step ").nth(1))
        .and_then(|rest| rest.split(')').next())
        .expect("the best's step");
    let card = std::fs::read_to_string(best.join("README.md")).expect("card");
    assert!(card.contains(&format!("| steps | {step} of 7 |")), "{card}");
    assert!(card.contains("| learning rate | 0.001 ("), "{card}");

    // The careful preset on 24 examples holds none out, so its early
    // stopping cannot act: refused, naming why.
    let o = tabtune(&[
        "train",
        "--model",
        &model,
        "--data",
        &data,
        "--out",
        &format!("{out_s}-careful"),
        "--preset",
        "careful",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("patience") && stderr.contains("validation"),
        "{stderr}"
    );
    let o = tabtune(&[
        "train",
        "--model",
        &model,
        "--data",
        &data,
        "--out",
        &format!("{out_s}-x"),
        "--preset",
        "quick",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("the presets are lesson, careful"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_held_out_prompt_is_shown_as_the_user_wrote_it() {
    let tok = common::smollm2_tokenizer();
    let turn = |role: &str, content: &str| tabtune::tokenizer::Message {
        role: role.into(),
        content: content.into(),
    };
    // A system turn before it, and the word "user" on a line of its own
    // inside it: only the template's own header marks where it begins.
    let text = "Ask the user\nuser\nwhat 2 + 2 is.";
    let rendered = tok
        .apply_chat_template(&[turn("system", "Be brief."), turn("user", text)], true)
        .expect("renders");
    let ids = tok.encode(&rendered, false).expect("encodes");
    assert_eq!(tok.prompt_text(&ids).expect("shows"), text);
    // A prompt that is not a rendered conversation (prompt/completion
    // data) is shown as its text.
    let raw = tok
        .encode("Translate to French: cheese", true)
        .expect("encodes");
    assert_eq!(
        tok.prompt_text(&raw).expect("shows"),
        "Translate to French: cheese"
    );
}
