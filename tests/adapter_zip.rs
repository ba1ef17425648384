//! The page's download: a zip with the same three files the CLI writes.

mod common;

use std::io::{Cursor, Read};

use common::{device, lora_config, small_data, tiny_hf};
use tabtune::io::bundle::{ENTRIES, adapter_zip};
use tabtune::io::card::{CardInfo, model_card};
use tabtune::lora::LoraAdapters;
use tabtune::model::quantized::BaseWeights;
use tabtune::train::{TrainConfig, Trainer};

#[test]
fn the_zip_holds_the_adapter_files_and_a_model_card_byte_for_byte() {
    let loaded = tiny_hf("tiny_llama");
    let adapters =
        LoraAdapters::init(lora_config(4), &loaded.model.config, 3, &device()).expect("init");
    let config = TrainConfig {
        steps: 2,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(loaded.model, adapters, small_data(), config).expect("trainer");
    common::step(&mut trainer);
    let last = common::step(&mut trainer);
    let files = common::export(trainer.adapters(), "org/tiny");
    let card = model_card(&CardInfo {
        base_model: "org/tiny",
        data_file: "data.jsonl",
        examples: trainer.num_examples(),
        steps_done: trainer.steps_done(),
        final_loss: Some(last.loss),
        lora: &trainer.adapters().config,
        train: &trainer.config,
        backend: "cpu",
        base_weights: BaseWeights::Q8_0,
        validation: Some((2.5, 1.25, 5)),
    });
    assert!(card.starts_with("---\nbase_model: \"org/tiny\"\nlibrary_name: peft\n"));
    assert!(card.contains(&format!("| final loss | {:.4} |", last.loss)));
    assert!(card.contains("| steps | 2 of 2 |"));
    assert!(card.contains("| base weights | quantized at load to Q8_0 "));
    assert!(
        card.contains("| validation loss (5 held-out examples) | 2.5000 before, 1.2500 after |")
    );

    let zip = adapter_zip(&files, &card).expect("zips");
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).expect("a valid zip");
    let names: Vec<String> = (0..archive.len())
        .map(|i| {
            archive
                .by_index(i)
                .expect("entry")
                .name()
                .expect("utf-8 name")
                .to_string()
        })
        .collect();
    assert_eq!(names, ENTRIES.map(String::from).to_vec());
    let want: [&[u8]; 3] = [
        &files.safetensors,
        files.config_json.as_bytes(),
        card.as_bytes(),
    ];
    for (name, want) in ENTRIES.iter().zip(want) {
        let mut got = Vec::new();
        archive
            .by_name(name)
            .expect("entry")
            .read_to_end(&mut got)
            .expect("reads");
        assert_eq!(got, want, "{name}");
    }
}
