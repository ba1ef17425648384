//! JSONL records and their rendering into ids + loss masks, with SmolLM2's
//! tokenizer and chat template as transformers saved them
//! (tests/fixtures/smollm2/hf_tokenizer).

mod common;

use common::read;
use tabtune::data::{Format, NumberedRecord, ReadOptions, Record, read_strict, render_record};

fn parse_jsonl(file: &str, bytes: &[u8]) -> tabtune::Result<Vec<NumberedRecord>> {
    let options = ReadOptions {
        format: Some(Format::Jsonl),
        ..ReadOptions::default()
    };
    read_strict(file, bytes, &options)
}
use tabtune::tokenizer::{Message, TextTokenizer};

fn tok() -> TextTokenizer {
    common::smollm2_tokenizer()
}

/// The text of the trained tokens (positions > 0), concatenated.
fn trained_text(t: &TextTokenizer, ex: &tabtune::data::Example) -> String {
    let ids: Vec<u32> = ex
        .ids
        .iter()
        .zip(&ex.trained)
        .skip(1)
        .filter(|(_, m)| **m)
        .map(|(i, _)| *i)
        .collect();
    t.decode(&ids, false).expect("decodes")
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
    }
}

#[test]
fn text_records_train_every_token_and_end_with_eos() {
    let t = tok();
    let ex = render_record(&t, &Record::Text("Hello world".into())).expect("renders");
    assert_eq!(*ex.ids.last().expect("ids"), t.eos_id);
    assert!(ex.trained.iter().all(|&m| m));
    assert_eq!(
        trained_text(&t, &ex),
        " world<|im_end|>",
        "position 0 is context only"
    );
}

#[test]
fn prompt_completion_trains_only_the_completion_and_eos() {
    let t = tok();
    let r = Record::PromptCompletion {
        prompt: "Q: 2+2?\nA:".into(),
        completion: " 4".into(),
    };
    let ex = render_record(&t, &r).expect("renders");
    assert_eq!(trained_text(&t, &ex), " 4<|im_end|>");
}

#[test]
fn chat_records_train_assistant_turns_through_the_end_of_turn_token() {
    let t = tok();
    let r = Record::Messages(vec![
        msg("system", "Be brief."),
        msg("user", "Hi"),
        msg("assistant", "Hello!"),
        msg("user", "Bye"),
        msg("assistant", "Goodbye."),
    ]);
    let ex = render_record(&t, &r).expect("renders");
    let full = t.decode(&ex.ids, false).expect("decodes");
    assert_eq!(
        full,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n\
         Hello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nGoodbye.<|im_end|>\n"
    );
    assert_eq!(trained_text(&t, &ex), "Hello!<|im_end|>Goodbye.<|im_end|>");
    let eos_positions: Vec<usize> = ex
        .ids
        .iter()
        .enumerate()
        .filter(|(_, i)| **i == t.eos_id)
        .map(|(p, _)| p)
        .collect();
    let trained_eos: Vec<bool> = eos_positions.iter().map(|&p| ex.trained[p]).collect();
    assert_eq!(
        trained_eos,
        vec![false, false, true, false, true],
        "only assistant end-of-turn tokens are trained"
    );
}

#[test]
fn hf_tokenizer_files_give_the_ids_transformers_gives() {
    common::assert_tokenizer_matches_transformers(&tok());
}

#[test]
fn every_bad_line_is_reported_with_its_number_and_reason() {
    let err = parse_jsonl("bad.jsonl", &read("data/bad.jsonl"))
        .expect_err("bad file")
        .to_string();
    for (line, reason) in [
        (2, "invalid JSON"),
        (3, "field `completion` is missing"),
        (
            4,
            "messages[0]: role `robot` is not one of system, user, assistant",
        ),
        (5, "expected a JSON object, found an array"),
        (6, "unknown record"),
    ] {
        assert!(
            err.contains(&format!("bad.jsonl:{line}: {reason}")),
            "line {line} ({reason}) in:\n{err}"
        );
    }
    assert!(!err.contains("bad.jsonl:1:"), "line 1 is fine:\n{err}");
    assert!(err.starts_with("bad.jsonl:2: 5 bad lines"), "{err}");
}

#[test]
fn blank_lines_a_bom_and_crlf_line_ends_are_accepted() {
    let crlf = b"\xEF\xBB\xBF{\"text\": \"a\"}\r\n\r\n{\"text\": \"b\"}\r\n";
    let lines = parse_jsonl("crlf.jsonl", crlf).expect("parses");
    assert_eq!(lines.iter().map(|l| l.line).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(lines[1].record, Record::Text("b".into()));
}

#[test]
fn a_file_that_mixes_schemas_names_the_lines_that_differ() {
    let err = parse_jsonl("mixed.jsonl", &read("data/mixed.jsonl"))
        .expect_err("mixed schemas")
        .to_string();
    assert!(err.starts_with("mixed.jsonl:2: 2 bad lines"), "{err}");
    assert!(
        err.contains("mixed.jsonl:2: this record is prompt/completion but the file's first record (line 1) is text"),
        "{err}"
    );
    assert!(
        err.contains("mixed.jsonl:4: this record is messages"),
        "{err}"
    );
}

#[test]
fn structural_problems_name_the_field() {
    let cases: [(&str, &str); 6] = [
        (r#"{"text": ""}"#, "field `text` is empty"),
        (
            r#"{"text": 5}"#,
            "field `text` should be a string, is a number",
        ),
        (r#"{"messages": []}"#, "field `messages` is empty"),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            "messages: no assistant turn",
        ),
        (
            r#"{"messages": [{"role": "user"}]}"#,
            "messages[0]: field `content` is missing",
        ),
        ("", "the file has no records"),
    ];
    for (line, want) in cases {
        let err = parse_jsonl("f.jsonl", line.as_bytes())
            .expect_err(line)
            .to_string();
        assert!(err.contains(want), "{line:?} -> {err}");
    }
    let err = parse_jsonl("f.jsonl", b"{\"text\": \"\xff\"}")
        .expect_err("not utf-8")
        .to_string();
    assert!(err.contains("f.jsonl:1: line is not valid UTF-8"), "{err}");
}

#[test]
fn a_bos_adding_post_processor_applies_to_text_but_not_to_chat_template_output() {
    // SmolLM2's tokenizer.json with a Llama-3-style TemplateProcessing that adds a BOS.
    let mut json: serde_json::Value =
        serde_json::from_slice(&read("smollm2/hf_tokenizer/tokenizer.json")).expect("json");
    json["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}}
    });
    let t = TextTokenizer::from_hf(
        "llama3-like",
        json.to_string().as_bytes(),
        Some(&read("smollm2/hf_tokenizer/tokenizer_config.json")),
        Some(&read("smollm2/hf_tokenizer/chat_template.jinja")),
    )
    .expect("loads");
    let text = render_record(&t, &Record::Text("Hello world".into())).expect("renders");
    assert_eq!(text.ids[0], 0, "BOS first for plain text");
    assert!(!text.trained[0], "BOS is never a target");
    let chat = render_record(
        &t,
        &Record::Messages(vec![msg("user", "Hi"), msg("assistant", "Yo")]),
    )
    .expect("renders");
    assert_ne!(
        chat.ids[0], 0,
        "the template's own text starts the chat; no BOS added on top"
    );
}

#[test]
fn prepare_keeps_good_lines_and_lists_every_bad_one_with_its_line() {
    let t = tok();
    let p = tabtune::data::prepare(
        "bad.jsonl",
        &read("data/bad.jsonl"),
        &ReadOptions::default(),
        &t,
        256,
    )
    .expect("one line is good");
    assert_eq!(p.summary.examples, 1, "only line 1 is usable");
    let lines: Vec<usize> = p.summary.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6]);
    assert!(
        p.summary.problems[0]
            .reason
            .starts_with("invalid JSON at column")
    );
    assert!(
        p.summary.problems[1]
            .reason
            .contains("`completion` is missing")
    );
    assert_eq!(p.summary.tokens, p.examples[0].ids.len());
}

#[test]
fn prepare_fails_when_no_line_is_usable_and_names_the_first_bad_one() {
    let t = tok();
    let err = tabtune::data::prepare(
        "x.jsonl",
        b"{\"foo\": 1}\n[1]\n",
        &ReadOptions::default(),
        &t,
        256,
    )
    .err()
    .expect("nothing usable");
    let text = err.to_string();
    assert!(
        text.starts_with("x.jsonl:1: no usable example (2 bad lines"),
        "{text}"
    );
}

#[test]
fn the_preview_marks_the_answer_as_trained_and_the_question_as_context() {
    let t = tok();
    let data = br#"{"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]}"#;
    let p = tabtune::data::prepare("one.jsonl", data, &ReadOptions::default(), &t, 8)
        .expect("prepares");
    let trained: String = p
        .summary
        .preview
        .iter()
        .filter(|s| s.trained)
        .map(|s| s.text.as_str())
        .collect();
    let context: String = p
        .summary
        .preview
        .iter()
        .filter(|s| !s.trained)
        .map(|s| s.text.as_str())
        .collect();
    assert_eq!(trained, "Paris.<|im_end|>");
    assert!(context.contains("Capital of France?") && !context.contains("Paris"));
    let all: String = p.summary.preview.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(all, t.decode(&p.examples[0].ids, false).expect("decodes"));
    assert_eq!(p.summary.longer_than_seq_len, 1, "longer than 8 tokens");
    assert_eq!(p.summary.notes.len(), 1);
    assert_eq!(p.summary.notes[0].line, 1);
    assert!(
        p.summary.notes[0]
            .reason
            .ends_with("longer than the sequence length 8: no trained token is left after the cut, so it is left out"),
        "{:?}",
        p.summary.notes
    );
    assert_eq!(p.summary.trained_tokens, p.examples[0].trained_tokens());
}

#[test]
fn a_file_past_the_token_budget_is_refused_at_its_line_without_reading_on() {
    let t = tok();
    let line = "{\"text\": \"one two three four five six seven eight\"}\n";
    let data: String = (0..20_000)
        .map(|i| line.replace("one", &format!("n{i}")))
        .collect();
    let read = std::cell::Cell::new(0usize);
    struct Counting<'a>(&'a [u8], &'a std::cell::Cell<usize>);
    impl std::io::Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.set(self.1.get() + n);
            Ok(n)
        }
    }
    let reader = std::io::BufReader::with_capacity(4096, Counting(data.as_bytes(), &read));
    let Err(err) =
        tabtune::data::prepare_within("big.jsonl", reader, &ReadOptions::default(), &t, 64, 1000)
    else {
        panic!("a file past the budget is refused");
    };
    let err = err.to_string();
    let at: usize = err
        .strip_prefix("big.jsonl:")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("names a line: {err}"));
    // Each line is about a dozen tokens: the budget runs out near line 80.
    assert!((40..200).contains(&at), "{err}");
    assert!(err.contains("more than 1000 tokens"), "{err}");
    assert!(
        read.get() < 32 * 1024,
        "read {} of {} bytes",
        read.get(),
        data.len()
    );
    // Under the budget, the same reader keeps everything.
    let p = tabtune::data::prepare_within(
        "big.jsonl",
        data.as_bytes(),
        &ReadOptions::default(),
        &t,
        64,
        usize::MAX,
    )
    .expect("prepares");
    assert_eq!(p.summary.examples, 20_000);
}
