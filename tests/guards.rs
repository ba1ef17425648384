//! Inputs that used to panic, hang or take memory without bound are each
//! refused with a message, or read within a bound: a sequence length under
//! 2, a tokenizer whose ids pass the embedding, a chat template that loops
//! or writes without end, a data line of unbounded length, bad lines
//! without number, a GGUF metadata array that claims millions of items.

mod common;

use common::{smollm2_tokenizer, tiny_model_dir};
use tabtune::data::read::{MAX_LINE, MAX_PROBLEMS};
use tabtune::data::record::Record;
use tabtune::data::{BadLines, ReadOptions, prepare_within, render_examples};
use tabtune::io::gguf::Gguf;
use tabtune::model::files::load_files;
use tabtune::tokenizer::{Message, TextTokenizer};

#[test]
fn a_sequence_length_under_two_is_refused_on_text_data_not_a_panic() {
    let tok = smollm2_tokenizer();
    let doc = Record::Document("one two three four five six seven eight nine ten".repeat(20));
    for seq_len in [0, 1] {
        let e = render_examples(&tok, &doc, seq_len, false)
            .expect_err("refused")
            .to_string();
        assert!(e.starts_with("setting `seq-len`"), "{e}");
        let text = b"A paragraph of plain text.\n\nAnother one.\n";
        let e = prepare_within(
            "notes.txt",
            &text[..],
            &ReadOptions::default(),
            &tok,
            seq_len,
            usize::MAX,
        )
        .err()
        .expect("refused")
        .to_string();
        assert!(e.contains("is too short"), "{e}");
    }
}

#[test]
fn a_tokenizer_whose_ids_pass_the_embedding_is_refused_at_load() {
    // SmolLM2's tokenizer with `<|im_end|>` (id 2) renumbered 60000: as
    // many tokens as the model embeds (49152), one of them out of its reach.
    let dir = tiny_model_dir("tabtune-guards-ids");
    let path = dir.join("tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("reads")).expect("json");
    json["model"]["vocab"]["<|im_end|>"] = 60000.into();
    for t in json["added_tokens"].as_array_mut().expect("added tokens") {
        if t["content"] == "<|im_end|>" {
            t["id"] = 60000.into();
        }
    }
    std::fs::write(&path, json.to_string()).expect("writes");
    let files = common::folder_files(&dir);
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let e = load_files("tiny", &files, &common::device())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("the tokenizer gives ids up to 60000")
            && e.contains("the model embeds only 49152 tokens"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn with_template(template: &str) -> TextTokenizer {
    TextTokenizer::from_hf(
        "t",
        &common::read("smollm2/hf_tokenizer/tokenizer.json"),
        Some(&common::read("smollm2/hf_tokenizer/tokenizer_config.json")),
        Some(template.as_bytes()),
    )
    .expect("builds")
}

fn chat() -> Vec<Message> {
    vec![
        Message {
            role: "user".into(),
            content: "Hi".into(),
        },
        Message {
            role: "assistant".into(),
            content: "Hello.".into(),
        },
    ]
}

#[test]
fn a_chat_template_that_loops_without_end_is_stopped_with_a_message() {
    let tok = with_template(
        "{% for i in range(10000) %}{% for j in range(10000) %}{{ '' }}{% endfor %}{% endfor %}",
    );
    let started = std::time::Instant::now();
    let e = tok
        .apply_chat_template(&chat(), false)
        .expect_err("stopped")
        .to_string();
    assert!(
        e.starts_with("chat template: it ran more than 240000 steps for 2 messages"),
        "{e}"
    );
    assert!(started.elapsed().as_secs() < 30);
}

#[test]
fn a_chat_template_that_writes_without_end_is_stopped_with_a_message() {
    let tok = with_template("{% for i in range(1000) %}{{ 'x' * 10000000 }}{% endfor %}");
    let e = tok
        .apply_chat_template(&chat(), false)
        .expect_err("stopped")
        .to_string();
    assert!(
        e.starts_with("chat template: it wrote more than 1048608 bytes for 8 bytes of messages"),
        "{e}"
    );
    // A real template is far inside both bounds.
    let real = common::smollm2_tokenizer();
    assert!(real.apply_chat_template(&chat(), true).is_ok());
}

#[test]
fn a_data_line_longer_than_the_cap_is_a_bad_line_and_reading_goes_on() {
    let good = r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#;
    let other = r#"{"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}"#;
    let mut file = Vec::with_capacity(MAX_LINE + 256);
    file.extend_from_slice(good.as_bytes());
    file.extend_from_slice(b"\n{\"text\": \"");
    file.resize(file.len() + MAX_LINE, b'a');
    file.extend_from_slice(b"\"}\n");
    file.extend_from_slice(other.as_bytes());
    file.push(b'\n');
    let scan = tabtune::data::read("big.jsonl", &file, &ReadOptions::default());
    assert_eq!(scan.records.len(), 2, "the lines around it are read");
    let problems: Vec<String> = scan.problems.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        problems,
        ["big.jsonl:2: the line is longer than 32 MiB (the line is left out)"]
    );
    // Plain text too.
    let mut text = b"First paragraph.\n".to_vec();
    text.resize(text.len() + MAX_LINE + 1, b'b');
    text.extend_from_slice(b"\nLast paragraph.\n");
    let options = ReadOptions {
        format: Some(tabtune::data::Format::Text),
        ..ReadOptions::default()
    };
    let scan = tabtune::data::read("notes.txt", &text, &options);
    assert_eq!(scan.problems.len(), 1);
    // The lines around it, one paragraph without it.
    assert_eq!(scan.records.len(), 1);
}

#[test]
fn a_csv_row_or_json_array_record_longer_than_the_cap_stops_the_read_with_its_line() {
    // A CSV row with a 33 MiB field, after a good row.
    let mut csv = b"prompt,response\nWhat is 2 + 2?,Four.\nLong,\"".to_vec();
    csv.resize(csv.len() + MAX_LINE + 1024 * 1024, b'a');
    csv.extend_from_slice(b"\"\nAfter,That.\n");
    let scan = tabtune::data::read("big.csv", &csv, &ReadOptions::default());
    assert_eq!(scan.records.len(), 1, "the row before it is read");
    let problems: Vec<String> = scan.problems.iter().map(|e| e.to_string()).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("big.csv:3: cannot read this row: ")
            && problems[0].contains("the row is longer than 32 MiB"),
        "{problems:?}"
    );
    // A JSON array (on one line) whose second record is 33 MiB.
    let mut json = br#"[{"text": "first"}, {"text": ""#.to_vec();
    json.resize(json.len() + MAX_LINE + 1024 * 1024, b'b');
    json.extend_from_slice(br#""}, {"text": "third"}]"#);
    let scan = tabtune::data::read("big.json", &json, &ReadOptions::default());
    assert_eq!(scan.records.len(), 1, "the record before it is read");
    let problems: Vec<String> = scan.problems.iter().map(|e| e.to_string()).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("big.json:1: cannot read: ")
            && problems[0].contains("the record is longer than 32 MiB"),
        "{problems:?}"
    );
}

#[test]
fn bad_lines_past_a_thousand_are_counted_not_kept() {
    let mut file = String::new();
    for _ in 0..1500 {
        file.push_str("{not json\n");
    }
    file.push_str(
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#,
    );
    file.push('\n');
    let scan = tabtune::data::read("bad.jsonl", file.as_bytes(), &ReadOptions::default());
    assert_eq!(scan.problems.len(), MAX_PROBLEMS);
    assert_eq!(scan.more_problems, 500);
    let tok = smollm2_tokenizer();
    let p = prepare_within(
        "bad.jsonl",
        file.as_bytes(),
        &ReadOptions::default(),
        &tok,
        64,
        usize::MAX,
    )
    .expect("one example");
    assert_eq!(
        (p.summary.problems.len(), p.summary.more_problems),
        (1000, 500)
    );
    let e = BadLines::Stop
        .check("bad.jsonl", &p.summary.problems, p.summary.more_problems)
        .expect_err("stops")
        .to_string();
    assert!(e.starts_with("bad.jsonl:1: 1500 bad lines:"), "{e}");
    assert!(e.ends_with("... and 1480 more"), "{e}");
}

#[test]
fn a_gguf_metadata_array_claiming_millions_of_items_is_refused() {
    // GGUF v3, no tensors, one key: an array of 5,000,000 u8 (5 MB in the
    // file, 160 MB once held as metadata values).
    let n: u64 = 5_000_000;
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata
    let key = b"tokenizer.ggml.token_type";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(9u32.to_le_bytes()); // array
    b.extend(0u32.to_le_bytes()); // of u8
    b.extend(n.to_le_bytes());
    b.resize(b.len() + n as usize, 1);
    let e = Gguf::parse("big.gguf", &b)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("a metadata array of 5000000 items; tabtune reads arrays of at most 4194304"),
        "{e}"
    );
}
