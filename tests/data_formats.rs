//! Every data format people have, read into the same records with the line
//! each starts on, and every problem named with its line.

mod common;

use common::read;
use tabtune::data::table::Columns;
use tabtune::data::{Format, ReadOptions, Record, Schema, render_examples};
use tabtune::tokenizer::{Message, TextTokenizer};

fn tok() -> TextTokenizer {
    common::smollm2_tokenizer()
}

fn scan(file: &str, bytes: &[u8]) -> tabtune::data::Scan {
    tabtune::data::read(file, bytes, &ReadOptions::default())
}

fn problems(s: &tabtune::data::Scan) -> Vec<String> {
    s.problems.iter().map(|e| e.to_string()).collect()
}

fn chat(q: &str, a: &str) -> Record {
    Record::Messages(vec![
        Message {
            role: "user".into(),
            content: q.into(),
        },
        Message {
            role: "assistant".into(),
            content: a.into(),
        },
    ])
}

#[test]
fn messages_sharegpt_alpaca_csv_and_tsv_give_the_same_conversations() {
    let want = vec![
        chat("What is the capital of France?", "Paris."),
        chat("Opposite of hot?", "Cold."),
        chat("2 + 2 = ?", "4"),
    ];
    let cases = [
        ("messages.json", Format::JsonArray, Schema::Messages),
        ("sharegpt.jsonl", Format::Jsonl, Schema::ShareGpt),
        ("alpaca.json", Format::JsonArray, Schema::Alpaca),
        ("qa.csv", Format::Csv, Schema::Columns),
        ("qa.tsv", Format::Tsv, Schema::Columns),
    ];
    for (file, format, schema) in cases {
        let s = scan(file, &read(&format!("data/formats/{file}")));
        assert_eq!(problems(&s), Vec::<String>::new(), "{file}");
        assert_eq!((s.format, s.schema), (format, Some(schema)), "{file}");
        let got: Vec<Record> = s.records.iter().map(|l| l.record.clone()).collect();
        assert_eq!(got, want, "{file}");
    }
}

#[test]
fn records_carry_the_line_they_start_on() {
    let lines = |file: &str| -> Vec<usize> {
        scan(file, &read(&format!("data/formats/{file}")))
            .records
            .iter()
            .map(|l| l.line)
            .collect()
    };
    // indent=2 JSON: "[", then each object over 12 lines.
    assert_eq!(lines("messages.json"), vec![2, 14, 26]);
    assert_eq!(lines("sharegpt.jsonl"), vec![1, 2, 3]);
    assert_eq!(lines("qa.csv"), vec![2, 3, 4], "the header is line 1");
    assert_eq!(
        lines("notes.md"),
        vec![1, 3, 7],
        "documents split at blank lines"
    );
}

#[test]
fn csv_quoting_embedded_newlines_and_an_explicit_column_mapping() {
    let csv = b"id,Q,A\n1,\"Say \"\"hi\"\"\",\"Hi,\nthere\"\n2,Next?,Yes\n";
    let s = tabtune::data::read("x.csv", csv, &ReadOptions::default());
    assert_eq!(s.records.len(), 0, "Q/A are not common names");
    assert!(
        problems(&s)[0].starts_with("x.csv:1: the header [\"id\", \"Q\", \"A\"] has no prompt")
    );
    let options = ReadOptions {
        columns: Columns::parse("prompt=Q,response=A").expect("valid mapping"),
        ..ReadOptions::default()
    };
    let s = tabtune::data::read("x.csv", csv, &options);
    assert_eq!(problems(&s), Vec::<String>::new());
    assert_eq!(s.records[0].record, chat("Say \"hi\"", "Hi,\nthere"));
    assert_eq!(
        s.records.iter().map(|l| l.line).collect::<Vec<_>>(),
        vec![2, 4],
        "row 2 starts after the embedded newline"
    );
    let bad = Columns::parse("prompt=Q,answer=A").expect_err("unknown role");
    assert!(
        bad.to_string()
            .starts_with("setting `columns`: `answer` is not one of")
    );
    let missing = ReadOptions {
        columns: Columns::parse("prompt=Nope,response=A").expect("valid"),
        ..ReadOptions::default()
    };
    let s = tabtune::data::read("x.csv", csv, &missing);
    assert!(
        problems(&s)[0].contains("no column `Nope`"),
        "{:?}",
        problems(&s)
    );
}

#[test]
fn table_rows_with_empty_cells_or_wrong_field_counts_are_named() {
    let tsv = b"prompt\tresponse\nq1\ta1\nq2\t\nq3\ta3\textra\n";
    let s = tabtune::data::read("t.tsv", tsv, &ReadOptions::default());
    assert_eq!(s.records.len(), 1);
    assert_eq!(
        problems(&s),
        vec![
            "t.tsv:3: column `response` is empty".to_string(),
            "t.tsv:4: 3 fields where the header has 2".to_string(),
        ]
    );
}

#[test]
fn a_json_syntax_error_names_its_line_and_column() {
    let s = scan("bad.json", b"[\n  {\"text\": \"a\"},\n  {\"text\": }\n]");
    assert_eq!(
        problems(&s),
        vec![
            "bad.json:3: invalid JSON at column 12: expected value at line 3 column 12".to_string()
        ]
    );
}

#[test]
fn a_json_array_reports_each_element_at_the_line_it_starts_on() {
    let json = b"\xEF\xBB\xBF[\n  {\"text\":\n    \"a\"},\n\n  {\"text\": \"b\"}, {\"text\": \"c\"},\n  {\"nope\": 1},\n  {\n\"text\": \"\"\n}\n, 5\n, \"s\"\n, 7]\n";
    let s = scan("a.json", json);
    let at: Vec<(usize, &Record)> = s.records.iter().map(|l| (l.line, &l.record)).collect();
    assert_eq!(
        at,
        vec![
            (2, &Record::Text("a".into())),
            (5, &Record::Text("b".into())),
            (5, &Record::Text("c".into())),
        ]
    );
    // A number is seen to end only at the byte after it, here a line end.
    let lines: Vec<usize> = s
        .problems
        .iter()
        .map(|e| match e {
            tabtune::Error::Data { line, .. } => *line,
            _ => 0,
        })
        .collect();
    assert_eq!(lines, vec![6, 7, 10, 11, 12], "{:?}", problems(&s));
}

#[test]
fn a_broken_json_array_keeps_the_records_before_the_break_and_names_it() {
    // (file, its one problem, how many records before it are kept)
    let cases: [(&[u8], &str, usize); 5] = [
        (
            b"[{\"text\": \"a\"},\n {\"text\": \"b\"}\n {\"text\": \"c\"}]",
            "b.json:3: invalid JSON at column 2: expected `,` or `]` at line 3 column 2",
            2,
        ),
        (
            b"[{\"text\": \"a\"},\n {\"text\": \"\xff\"}]",
            "b.json:2: the file is not valid UTF-8",
            1,
        ),
        (
            b"[{\"text\": \"a\"}]\n]",
            "b.json:2: invalid JSON at column 1: trailing characters at line 2 column 1",
            1,
        ),
        (
            b"[{\"text\": \"a\"},\n",
            "b.json:2: the file ends inside the JSON array: a closing `]` or `}` is missing (or the file was cut short)",
            1,
        ),
        (
            b"\n{\"text\": \"a\"}",
            "b.json:2: invalid JSON at column 1: invalid type: map, expected a JSON array of records at line 2 column 1",
            0,
        ),
    ];
    for (bytes, want, kept) in cases {
        let s = tabtune::data::read(
            "b.json",
            bytes,
            &ReadOptions {
                format: Some(Format::JsonArray),
                ..ReadOptions::default()
            },
        );
        assert_eq!(problems(&s), vec![want.to_string()]);
        assert_eq!(s.records.len(), kept, "{want}");
    }
    assert_eq!(
        problems(&scan("e.json", b" [ ] ")),
        vec!["e.json:1: the JSON array is empty".to_string()]
    );
}

#[test]
fn wrong_role_order_duplicates_and_bad_sharegpt_roles_are_named() {
    let jsonl = concat!(
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}"#,
        "\n",
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}]}"#,
        "\n",
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}]}"#,
        "\n",
        r#"{"messages": [{"role": "assistant", "content": "c"}]}"#,
        "\n",
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "c"}]}"#,
        "\n",
    );
    let s = scan("r.jsonl", jsonl.as_bytes());
    // A repeat is kept, with a note: people repeat examples on purpose.
    assert_eq!(s.records.len(), 2);
    assert_eq!(
        s.notes,
        vec![(
            3,
            "repeats line 2: kept, so it weighs twice (the option to leave out repeats drops it)"
                .to_string()
        )]
    );
    // Asked to, the reader leaves it out.
    let dropped = tabtune::data::read(
        "r.jsonl",
        jsonl.as_bytes(),
        &ReadOptions {
            drop_duplicates: true,
            ..ReadOptions::default()
        },
    );
    assert_eq!(dropped.records.len(), 1);
    assert_eq!(
        dropped.notes,
        vec![(3, "repeats line 2: left out".to_string())]
    );
    assert_eq!(problems(&dropped), problems(&s));
    assert_eq!(
        problems(&s),
        vec![
            "r.jsonl:1: messages: turn 1: `user` where a `assistant` turn should be (turns alternate user, assistant)".to_string(),
            "r.jsonl:4: messages: turn 0: `assistant` where a `user` turn should be (turns alternate user, assistant)".to_string(),
            "r.jsonl:5: messages: turn 1: a system message may only come first".to_string(),
        ]
    );
    let s = scan(
        "s.jsonl",
        br#"{"conversations": [{"from": "bot", "value": "x"}]}"#,
    );
    assert_eq!(
        problems(&s),
        vec![
            "s.jsonl:1: conversations[0]: `from` is `bot`, not one of system, human, gpt"
                .to_string()
        ]
    );
}

#[test]
fn the_format_comes_from_the_name_then_the_content_and_can_be_named() {
    assert_eq!(Format::detect("a.jsonl", b"[1]"), Format::Jsonl);
    assert_eq!(Format::detect("a.json", b"  [{}]"), Format::JsonArray);
    assert_eq!(Format::detect("a.json", b"{}\n{}"), Format::Jsonl);
    assert_eq!(Format::detect("a.CSV", b"x"), Format::Csv);
    assert_eq!(Format::detect("a.tsv", b"x"), Format::Tsv);
    assert_eq!(Format::detect("README.md", b"{"), Format::Text);
    assert_eq!(
        Format::detect("data", b"\xEF\xBB\xBF[{}]"),
        Format::JsonArray
    );
    assert_eq!(Format::detect("data", b"hello"), Format::Text);
    assert_eq!(Format::parse("csv").expect("known"), Format::Csv);
    let err = Format::parse("xml").expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "setting `format`: `xml` is not one of jsonl, json, csv, tsv, text"
    );
    // Named, a .txt file holding JSONL is read as JSONL.
    let options = ReadOptions {
        format: Some(Format::Jsonl),
        ..ReadOptions::default()
    };
    let s = tabtune::data::read("data.txt", b"{\"text\": \"hi\"}\n", &options);
    assert_eq!(s.records[0].record, Record::Text("hi".into()));
}

#[test]
fn a_long_document_becomes_windows_that_cover_every_token() {
    let t = tok();
    let doc =
        "LoRA trains two small matrices per layer while the base weights stay frozen. ".repeat(8);
    let record = Record::Document(doc.clone());
    let whole = tabtune::data::render_record(&t, &record).expect("renders");
    let windows = render_examples(&t, &record, 16, false).expect("renders");
    assert!(windows.len() > 1);
    assert!(windows.iter().all(|w| w.ids.len() <= 16));
    let joined: Vec<u32> = windows.iter().flat_map(|w| w.ids.clone()).collect();
    assert_eq!(
        joined, whole.ids,
        "windows are the document's tokens in order"
    );
    assert_eq!(*joined.last().expect("ids"), t.eos_id);
    // A plain `text` record is cut instead (one example).
    let text = render_examples(&t, &Record::Text(doc), 16, false).expect("renders");
    assert_eq!(text.len(), 1);
}

#[test]
fn a_huge_document_without_blank_lines_is_read_in_parts_at_line_ends() {
    let lines: Vec<String> = (0..20_000)
        .map(|i| format!("line {i} of one long document without a blank line"))
        .collect();
    let text = lines.join("\n");
    let s = scan("huge.txt", text.as_bytes());
    assert!(s.records.len() >= 4, "{} parts", s.records.len());
    let mut next = 1;
    let mut parts = Vec::new();
    for l in &s.records {
        let Record::Document(part) = &l.record else {
            panic!("documents");
        };
        assert_eq!(l.line, next, "each part starts on the line after the last");
        assert!(part.len() < tabtune::data::text::PART_BYTES + 64);
        next += part.lines().count();
        parts.push(part.as_str());
    }
    assert_eq!(
        parts.join("\n"),
        text,
        "the parts are the document, in order"
    );
}

#[test]
fn invalid_utf8_in_a_text_file_names_the_line_and_keeps_the_rest() {
    let s = scan("n.txt", b"good line\n\xff\xfe\nnext\n\nsecond doc\n");
    assert_eq!(
        problems(&s),
        vec!["n.txt:2: line is not valid UTF-8 (the line is left out)".to_string()]
    );
    assert_eq!(
        s.records
            .iter()
            .map(|l| l.record.clone())
            .collect::<Vec<_>>(),
        vec![
            Record::Document("good line\nnext".into()),
            Record::Document("second doc".into())
        ]
    );
}

#[test]
fn a_model_without_a_chat_template_renders_conversations_as_chatml() {
    let t = TextTokenizer::from_hf(
        "no-template",
        &read("smollm2/hf_tokenizer/tokenizer.json"),
        Some(&read("smollm2/hf_tokenizer/tokenizer_config.json")),
        None,
    )
    .expect("tokenizer loads");
    assert!(t.chat_template.is_none());
    let ex = tabtune::data::render_record(&t, &chat("Hi", "Hello")).expect("renders");
    assert_eq!(
        t.decode(&ex.ids, false).expect("decodes"),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    );
    let trained: Vec<u32> = ex
        .ids
        .iter()
        .zip(&ex.trained)
        .filter(|(_, m)| **m)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        t.decode(&trained, false).expect("decodes"),
        "Hello<|im_end|>"
    );
}

#[test]
fn all_tokens_trains_the_prompts_too() {
    let t = tok();
    let bytes = read("data/formats/sharegpt.jsonl");
    let answers = tabtune::data::prepare("s.jsonl", &bytes, &ReadOptions::default(), &t, 256)
        .expect("prepares");
    let all = ReadOptions {
        all_tokens: true,
        ..ReadOptions::default()
    };
    let every = tabtune::data::prepare("s.jsonl", &bytes, &all, &t, 256).expect("prepares");
    let s = &every.summary;
    assert_eq!(
        s.trained_tokens,
        s.tokens - s.examples,
        "all but each first token"
    );
    assert!(answers.summary.trained_tokens < s.trained_tokens / 4);
}

#[test]
fn conversations_from_every_format_match_transformers_ids_and_an_independent_mask() {
    // tests/fixtures/data/formats/reference.json, from scripts/make_fixtures.py:
    // transformers' apply_chat_template + tokenizer, and the trained mask from
    // the assistant spans found by a regular expression over the rendering.
    let t = tok();
    let reference: serde_json::Value =
        serde_json::from_slice(&read("data/formats/reference.json")).expect("json");
    let files = reference.as_object().expect("object");
    assert_eq!(files.len(), 6);
    for (file, examples) in files {
        let s = scan(file, &read(&format!("data/formats/{file}")));
        assert_eq!(problems(&s), Vec::<String>::new(), "{file}");
        let examples = examples.as_array().expect("examples");
        assert_eq!(s.records.len(), examples.len(), "{file}");
        for (line, want) in s.records.iter().zip(examples) {
            let ex = tabtune::data::render_record(&t, &line.record).expect("renders");
            let ids: Vec<u32> = serde_json::from_value(want["ids"].clone()).expect("ids");
            let trained: Vec<bool> = serde_json::from_value(want["trained"].clone()).expect("mask");
            assert_eq!(ex.ids, ids, "{file}:{}", line.line);
            assert_eq!(ex.trained, trained, "{file}:{}", line.line);
        }
    }
}

#[test]
fn streamed_in_one_byte_reads_every_format_gives_the_same_records_and_lines() {
    for file in [
        "qa.csv",
        "qa.tsv",
        "sharegpt.jsonl",
        "notes.md",
        "messages.json",
    ] {
        let bytes = read(&format!("data/formats/{file}"));
        let whole = scan(file, &bytes);
        let mut streamed = Vec::new();
        let s = tabtune::data::read_stream(
            file,
            std::io::BufReader::with_capacity(1, bytes.as_slice()),
            &ReadOptions::default(),
            &mut |l| streamed.push(l),
        );
        assert_eq!(s.format, whole.format, "{file}");
        assert_eq!(streamed, whole.records, "{file}");
        assert!(s.problems.is_empty(), "{file}");
    }
    let csv = b"\xEF\xBB\xBFprompt,response\r\n\"multi\r\nline\",ok\r\n\r\nq,\r\n";
    let mut streamed = Vec::new();
    let s = tabtune::data::read_stream(
        "x.csv",
        std::io::BufReader::with_capacity(1, &csv[..]),
        &ReadOptions::default(),
        &mut |l| streamed.push(l),
    );
    assert_eq!(streamed.iter().map(|l| l.line).collect::<Vec<_>>(), vec![2]);
    assert_eq!(
        problems_of(&s),
        vec!["x.csv:5: column `response` is empty".to_string()]
    );
}

fn problems_of(s: &tabtune::data::StreamScan) -> Vec<String> {
    s.problems.iter().map(|e| e.to_string()).collect()
}
