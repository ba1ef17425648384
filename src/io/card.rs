//! The adapter's `README.md` model card: what it was trained from and how,
//! so a downloaded adapter explains itself. The CLI and the page write the
//! same card.

use crate::lora::LoraConfig;
use crate::model::quantized::BaseWeights;
use crate::train::TrainConfig;

/// What the card records about a finished (or stopped) run.
pub struct CardInfo<'a> {
    /// `base_model_name_or_path`.
    pub base_model: &'a str,
    /// Name of the training data file.
    pub data_file: &'a str,
    /// Examples trained on.
    pub examples: usize,
    /// Optimizer steps taken (may be fewer than planned if stopped early).
    pub steps_done: usize,
    /// Mean loss of the last step, if any step ran.
    pub final_loss: Option<f32>,
    /// Adapter settings.
    pub lora: &'a LoraConfig,
    /// Optimisation settings.
    pub train: &'a TrainConfig,
    /// Where it ran: `cpu`, `webgpu`, ...
    pub backend: &'a str,
    /// How the base's matrices were kept: as stored, or quantized at load
    /// (then the losses were measured on the quantized base).
    pub base_weights: BaseWeights,
    /// Loss on held-out examples before and after training, and how many.
    pub validation: Option<(f64, f64, usize)>,
}

/// `text` as a double-quoted string: JSON's escapes, which YAML's
/// double-quoted scalars and Python's string literals read alike.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// `text` for a line of Markdown: control characters (a newline would end
/// the line) and backticks (they would end an inline code span) replaced.
fn inline(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() || c == '`' { ' ' } else { c })
        .collect()
}

/// Markdown with YAML front matter (`base_model`, `library_name: peft`), as
/// the Hugging Face hub reads it. The base model's and the data file's names
/// are a person's input: they are written quoted in the YAML and the Python
/// snippet, and made safe for a line of Markdown elsewhere, so the card
/// stays valid whatever they hold.
pub fn model_card(info: &CardInfo) -> String {
    let l = info.lora;
    let t = info.train;
    let targets: Vec<&str> = l.targets.iter().map(|t| t.peft_name()).collect();
    let loss = info
        .final_loss
        .map_or_else(|| "n/a".to_string(), |x| format!("{x:.4}"));
    format!(
        "---\nbase_model: {base_yaml}\nlibrary_name: peft\ntags:\n- lora\n- tabtune\n---\n\n\
         # LoRA adapter for {base}\n\n\
         Trained with tabtune on `{data}` ({examples} examples), \
         on the {backend} backend.\n\n\
         | setting | value |\n| --- | --- |\n\
         | rank / alpha / dropout | {r} / {alpha} / {dropout} |\n\
         | rsLoRA | {rslora} |\n\
         | targets | {targets} |\n\
         | steps | {done} of {planned} |\n\
         | learning rate | {lr} ({schedule:?}, {warmup} warm-up steps) |\n\
         | batch x accumulation | {batch} x {accum} |\n\
         | sequence length | {seq} |\n\
         | seed | {seed} |\n\
         | base weights | {base_weights} |\n\
         | final loss | {loss} |\n{validation}\n\
         ## Use\n\n\
         ```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\
         base = AutoModelForCausalLM.from_pretrained({base_yaml})\n\
         model = PeftModel.from_pretrained(base, \"path/to/this/folder\")\n```\n",
        base_yaml = quoted(info.base_model),
        base = inline(info.base_model),
        data = inline(info.data_file),
        examples = info.examples,
        backend = info.backend,
        base_weights = match info.base_weights.ggml_type() {
            None => "as the file stores them".to_string(),
            Some(ty) => format!(
                "quantized at load to {ty:?} (the losses here were measured on it; \
                 the adapter also applies to the original weights)"
            ),
        },
        r = l.rank,
        alpha = l.alpha,
        dropout = l.dropout,
        rslora = l.use_rslora,
        targets = targets.join(", "),
        done = info.steps_done,
        planned = t.steps,
        lr = t.lr,
        schedule = t.schedule,
        warmup = t.warmup_steps,
        batch = t.batch_size,
        accum = t.grad_accum,
        seq = t.seq_len,
        seed = t.seed,
        validation = info
            .validation
            .map_or_else(String::new, |(before, after, n)| format!(
                "| validation loss ({n} held-out examples) | {before:.4} before, {after:.4} after |\n"
            )),
    )
}
