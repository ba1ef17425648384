//! The defaults work in a lesson: the default model (SmolLM2-135M), the
//! page's sample data and the default settings (the page's form and the
//! CLI's flags both start from `RunSettings::default`) change the model
//! visibly. New questions, not in the data, get answers in the data's
//! pirate voice, which the original model's answers do not have, and the
//! stop check after training finds the tuned model ending its answers.
//! One run of 18 steps on the real model: about two minutes here.

mod common;

use std::path::Path;

use common::{default_model, device};
use tabtune::data::{BadLines, ReadOptions};
use tabtune::model::files::load_files;
use tabtune::readback::block_on;
use tabtune::train::judge::Source;
use tabtune::train::session::When;
use tabtune::train::{Progress, RunSettings, Session};

/// Questions the sample data does not hold.
const NEW: [&str; 4] = [
    "What is the capital of Italy?",
    "How many hours are in a day?",
    "What is the color of grass?",
    "Who painted the Mona Lisa?",
];

/// Words of the sample data's voice, whole ("carry" is not "arr").
fn pirate(text: &str) -> bool {
    let t = text.to_lowercase();
    let mut words = t.split(|c: char| !(c.is_alphanumeric() || c == '\''));
    words.any(|w| ["arr", "matey", "ahoy", "o'", "ye"].contains(&w))
}

#[test]
fn the_default_run_on_the_sample_data_answers_new_questions_in_its_voice() {
    let data_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/samples/chat.jsonl");
    let data = std::fs::read_to_string(&data_path).expect("sample data");
    for q in NEW {
        assert!(!data.contains(q), "{q} is in the sample data");
    }
    let model = std::fs::read(default_model()).expect("model");
    let mut s = Session::new(device(), "cpu");
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf";
    s.load(load_files(name, &[(name, &model)], &device()).expect("loads"))
        .expect("has a tokenizer");
    let settings = RunSettings::default();
    s.prepare_data(
        "chat.jsonl",
        data.as_bytes(),
        &ReadOptions::default(),
        settings.seq_len,
        usize::MAX,
    )
    .expect("reads");
    s.set_prompts(NEW.iter().map(|q| q.to_string()).collect())
        .expect("prompts");
    let info = s.start(&settings, BadLines::Stop).expect("starts");
    assert_eq!(info.steps, 18, "3 epochs of 24 examples, 4 a batch");
    let mut last_loss = f32::NAN;
    let mut check = None;
    loop {
        match block_on(s.advance()).expect("advances") {
            Progress::Step { report, .. } => last_loss = report.loss,
            Progress::Samples(x) if x.when == When::After => check = Some(x),
            Progress::Finished { stopped, .. } => {
                assert!(!stopped);
                break;
            }
            _ => {}
        }
    }
    let answer =
        |q: &str, tuned: bool| block_on(s.generate(q, 48, tuned, |_| Ok(()))).expect("generates");
    let base: Vec<String> = NEW.iter().map(|q| answer(q, false)).collect();
    let tuned: Vec<String> = NEW.iter().map(|q| answer(q, true)).collect();
    eprintln!("final loss {last_loss}\nbase: {base:#?}\ntuned: {tuned:#?}");
    assert!(
        base.iter().all(|a| !pirate(a)),
        "the original model has no pirate voice: {base:#?}"
    );
    let voiced = tuned.iter().filter(|a| pirate(a)).count();
    assert!(
        voiced >= 3,
        "{voiced} of 4 new questions answered in the data's voice: {tuned:#?}"
    );
    let check = check.expect("the stop check ran on the person's prompts");
    assert_eq!(check.source, Source::Yours);
    eprintln!(
        "stop check: {} of {} within {} tokens",
        check.ended,
        check.samples.len(),
        check.max_tokens
    );
    assert!(
        check.ended >= 3,
        "the tuned model ends its answers: {check:#?}"
    );
}
