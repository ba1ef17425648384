//! A Gemma GGUF's SentencePiece vocabulary (`tokenizer.ggml.model =
//! llama`, no merges stored) as a `tokenizers` BPE, built the way
//! transformers' `gguf_tokenizer_mapping.gemma_tokenizer` builds it:
//!
//! 1. A token of whitespace holding a space is stored as real spaces; it is
//!    respelled as that many `▁`, the spelling the normalizer produces.
//! 2. The merges are recovered from the vocabulary
//!    (`tokenization_utils_base.generate_merges`): every split of every
//!    token into two tokens, ranked by the token's position in the file
//!    (earlier first; Gemma's scores do not follow its merge order), then
//!    the longer left part, then the longer right part.
//! 3. BPE with byte fallback and `<unk>`; spaces normalized to `▁`; the
//!    decoder turns `▁` back into spaces and fuses byte tokens.
//!
//! UNKNOWN and CONTROL tokens (types 2 and 3) are special tokens;
//! USER_DEFINED ones (type 4, such as `\n`) are added tokens matched whole,
//! as llama.cpp matches them.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, SplitDelimiterBehavior, Tokenizer};

/// SentencePiece's visible space.
const SPACE: &str = "\u{2581}";

/// Python's `str.isspace` (Unicode White_Space plus the ASCII separators
/// U+001C..U+001F).
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A token as the BPE sees it: whitespace holding a space becomes `▁`s.
fn respell(token: &str) -> String {
    if token.contains(' ') && token.chars().all(py_space) {
        SPACE.repeat(token.chars().count())
    } else {
        token.to_string()
    }
}

/// One recovered merge: its parts, and what ranks it.
struct Merge {
    left: String,
    right: String,
    /// The merged token's (last) position in the file.
    position: u32,
    left_chars: usize,
    right_chars: usize,
}

/// The merges the vocabulary implies, best first (see the module docs).
/// `order` lists each distinct token once, at its first position; `index`
/// maps it to its last.
fn merges(order: &[&str], index: &HashMap<String, u32>) -> Vec<(String, String)> {
    let mut all: Vec<Merge> = Vec::new();
    for &token in order {
        let mut local: Vec<(&str, &str)> = token
            .char_indices()
            .skip(1)
            .map(|(at, _)| token.split_at(at))
            .filter(|(l, r)| index.contains_key(*l) && index.contains_key(*r))
            .collect();
        local.sort_by_key(|(l, r)| (index[*l], index[*r])); // stable, as Python's
        all.extend(local.into_iter().map(|(l, r)| Merge {
            left: l.to_string(),
            right: r.to_string(),
            position: index[token],
            left_chars: l.chars().count(),
            right_chars: r.chars().count(),
        }));
    }
    // Python's sorted(key=(-position, len(l), len(r)), reverse=True): stable.
    all.sort_by(|a, b| {
        let key = |m: &Merge| (std::cmp::Reverse(m.position), m.left_chars, m.right_chars);
        key(b).cmp(&key(a))
    });
    all.into_iter().map(|m| (m.left, m.right)).collect()
}

/// The tokenizer of a Gemma GGUF's `tokens` and their `types` (ggml token
/// types; 1 where the file has none). Returns a reason on failure.
pub fn tokenizer(tokens: &[&str], types: &[u64]) -> Result<Tokenizer, String> {
    let respelled: Vec<String> = tokens.iter().map(|t| respell(t)).collect();
    // Python's dict: a repeated token keeps its first place and its last id.
    let mut index: HashMap<String, u32> = HashMap::with_capacity(respelled.len());
    let mut order: Vec<&str> = Vec::with_capacity(respelled.len());
    for (i, t) in respelled.iter().enumerate() {
        if index.insert(t.clone(), i as u32).is_none() {
            order.push(t);
        }
    }
    let merges = merges(&order, &index);
    let vocab: Vocab = index.iter().map(|(t, &i)| (t.clone(), i)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token("<unk>".into())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| e.to_string())?;
    let mut inner = Tokenizer::new(bpe);
    let normalizer = Replace::new(" ", SPACE).map_err(|e| e.to_string())?;
    inner
        .with_normalizer(Some(normalizer))
        .map_err(|e| e.to_string())?;
    let split = Split::new(
        SplitPattern::String(" ".into()),
        SplitDelimiterBehavior::MergedWithPrevious,
        false,
    )
    .map_err(|e| e.to_string())?;
    inner.with_pre_tokenizer(Some(split));
    let decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPACE, " ").map_err(|e| e.to_string())?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    let typed = |ty: u64| {
        tokens
            .iter()
            .zip(types)
            .filter(move |(_, t)| **t == ty)
            .map(|(token, _)| *token)
    };
    // UNKNOWN (2) too: transformers' GemmaTokenizer adds `<unk>` as its unk
    // token, and llama.cpp matches it whole.
    let special: Vec<AddedToken> = typed(2)
        .chain(typed(3))
        .map(|t| AddedToken::from(t.to_string(), true).normalized(false))
        .collect();
    inner
        .add_special_tokens(special)
        .map_err(|e| e.to_string())?;
    // transformers adds those it finds in the (respelled) vocabulary.
    let user: Vec<AddedToken> = typed(4)
        .filter(|t| index.contains_key(*t))
        .map(|t| AddedToken::from(t.to_string(), false).normalized(false))
        .collect();
    inner.add_tokens(user).map_err(|e| e.to_string())?;
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::{merges, respell};
    use std::collections::HashMap;

    #[test]
    fn runs_of_spaces_are_respelled_and_other_tokens_kept() {
        assert_eq!(respell("   "), "\u{2581}\u{2581}\u{2581}");
        assert_eq!(respell(" \t"), "\u{2581}\u{2581}");
        assert_eq!(respell("\n\n"), "\n\n"); // no space in it
        assert_eq!(respell(" a"), " a");
    }

    #[test]
    fn merges_rank_by_position_then_longer_left_part() {
        let order = ["a", "b", "c", "ab", "bc", "abc"];
        let index: HashMap<String, u32> = order
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let got = merges(&order, &index);
        let pair = |l: &str, r: &str| (l.to_string(), r.to_string());
        // "ab" (position 3) before "bc" (4) before "abc" (5); for "abc",
        // "ab"+"c" (longer left part) before "a"+"bc".
        assert_eq!(
            got,
            [
                pair("a", "b"),
                pair("b", "c"),
                pair("ab", "c"),
                pair("a", "bc")
            ]
        );
    }
}
