//! Whisper's tokenizer and special tokens, found by their text in `tokenizer.json` (their ids
//! differ between the English-only models, the multilingual ones and large-v3, which added a
//! language).

use std::path::Path;

use tokenizers::Tokenizer;

use crate::checks::read_tokenizer;
use crate::error::EngineError;

/// Whisper's languages: code and the lower-case English name OpenAI's API reports, in the
/// order of their tokens (large-v3 added `yue`).
pub const LANGUAGES: &[(&str, &str)] = &[
    ("en", "english"),
    ("zh", "chinese"),
    ("de", "german"),
    ("es", "spanish"),
    ("ru", "russian"),
    ("ko", "korean"),
    ("fr", "french"),
    ("ja", "japanese"),
    ("pt", "portuguese"),
    ("tr", "turkish"),
    ("pl", "polish"),
    ("ca", "catalan"),
    ("nl", "dutch"),
    ("ar", "arabic"),
    ("sv", "swedish"),
    ("it", "italian"),
    ("id", "indonesian"),
    ("hi", "hindi"),
    ("fi", "finnish"),
    ("vi", "vietnamese"),
    ("he", "hebrew"),
    ("uk", "ukrainian"),
    ("el", "greek"),
    ("ms", "malay"),
    ("cs", "czech"),
    ("ro", "romanian"),
    ("da", "danish"),
    ("hu", "hungarian"),
    ("ta", "tamil"),
    ("no", "norwegian"),
    ("th", "thai"),
    ("ur", "urdu"),
    ("hr", "croatian"),
    ("bg", "bulgarian"),
    ("lt", "lithuanian"),
    ("la", "latin"),
    ("mi", "maori"),
    ("ml", "malayalam"),
    ("cy", "welsh"),
    ("sk", "slovak"),
    ("te", "telugu"),
    ("fa", "persian"),
    ("lv", "latvian"),
    ("bn", "bengali"),
    ("sr", "serbian"),
    ("az", "azerbaijani"),
    ("sl", "slovenian"),
    ("kn", "kannada"),
    ("et", "estonian"),
    ("mk", "macedonian"),
    ("br", "breton"),
    ("eu", "basque"),
    ("is", "icelandic"),
    ("hy", "armenian"),
    ("ne", "nepali"),
    ("mn", "mongolian"),
    ("bs", "bosnian"),
    ("kk", "kazakh"),
    ("sq", "albanian"),
    ("sw", "swahili"),
    ("gl", "galician"),
    ("mr", "marathi"),
    ("pa", "punjabi"),
    ("si", "sinhala"),
    ("km", "khmer"),
    ("sn", "shona"),
    ("yo", "yoruba"),
    ("so", "somali"),
    ("af", "afrikaans"),
    ("oc", "occitan"),
    ("ka", "georgian"),
    ("be", "belarusian"),
    ("tg", "tajik"),
    ("sd", "sindhi"),
    ("gu", "gujarati"),
    ("am", "amharic"),
    ("yi", "yiddish"),
    ("lo", "lao"),
    ("uz", "uzbek"),
    ("fo", "faroese"),
    ("ht", "haitian creole"),
    ("ps", "pashto"),
    ("tk", "turkmen"),
    ("nn", "nynorsk"),
    ("mt", "maltese"),
    ("sa", "sanskrit"),
    ("lb", "luxembourgish"),
    ("my", "myanmar"),
    ("bo", "tibetan"),
    ("tl", "tagalog"),
    ("mg", "malagasy"),
    ("as", "assamese"),
    ("tt", "tatar"),
    ("haw", "hawaiian"),
    ("ln", "lingala"),
    ("ha", "hausa"),
    ("ba", "bashkir"),
    ("jw", "javanese"),
    ("su", "sundanese"),
    ("yue", "cantonese"),
];

/// The language code of `name_or_code` ("en", "EN", "english", "English"), if Whisper knows it.
pub fn language_code(name_or_code: &str) -> Option<&'static str> {
    let wanted = name_or_code.trim().to_ascii_lowercase();
    LANGUAGES
        .iter()
        .find(|(code, name)| *code == wanted || *name == wanted)
        .map(|(code, _)| *code)
}

/// The English name of a language code ("en" → "english").
pub fn language_name(code: &str) -> Option<&'static str> {
    LANGUAGES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// The special tokens of one Whisper vocabulary.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub eot: u32,
    pub sot: u32,
    pub sot_prev: u32,
    pub no_timestamps: u32,
    /// The first timestamp token (`<|0.00|>`); every id from here on is a timestamp.
    pub timestamp_begin: u32,
    pub transcribe: Option<u32>,
    pub translate: Option<u32>,
    pub sot_lm: Option<u32>,
    /// `<|nocaptions|>` (`<|nospeech|>` in large-v3).
    pub no_speech: Option<u32>,
    /// The language tokens this vocabulary has: (code, id).
    pub languages: Vec<(&'static str, u32)>,
}

/// Whisper's tokenizer with its special tokens.
pub struct WhisperTokenizer {
    pub tokenizer: Tokenizer,
    pub special: SpecialTokens,
}

impl WhisperTokenizer {
    /// Loads `tokenizer.json`; `vocab_size` (from config.json) bounds every special id.
    pub fn load(path: &Path, vocab_size: usize) -> Result<WhisperTokenizer, EngineError> {
        let tokenizer = read_tokenizer(path)?;
        let id = |text: &str| {
            tokenizer
                .token_to_id(text)
                .filter(|&i| (i as usize) < vocab_size)
        };
        let need = |text: &str| {
            id(text).ok_or_else(|| {
                EngineError::bad_file(
                    path,
                    format!("has no {text} token (not a Whisper tokenizer?)"),
                )
            })
        };
        let no_timestamps = need("<|notimestamps|>")?;
        let timestamp_begin = no_timestamps + 1;
        // 30 s in 0.02 s steps: 1501 timestamp tokens follow <|notimestamps|>.
        if (timestamp_begin as usize) + 1501 > vocab_size {
            return Err(EngineError::bad_file(
                path,
                "leaves no room for the 1501 timestamp tokens after <|notimestamps|> within vocab_size",
            ));
        }
        let languages = LANGUAGES
            .iter()
            .filter_map(|(code, _)| id(&format!("<|{code}|>")).map(|i| (*code, i)))
            .collect();
        let special = SpecialTokens {
            eot: need("<|endoftext|>")?,
            sot: need("<|startoftranscript|>")?,
            sot_prev: need("<|startofprev|>")?,
            no_timestamps,
            timestamp_begin,
            transcribe: id("<|transcribe|>"),
            translate: id("<|translate|>"),
            sot_lm: id("<|startoflm|>"),
            no_speech: id("<|nospeech|>").or_else(|| id("<|nocaptions|>")),
            languages,
        };
        Ok(WhisperTokenizer { tokenizer, special })
    }

    /// Text tokens of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|_| EngineError::InvalidInput("the prompt cannot be tokenized".into()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `tokens`, special and timestamp tokens left out.
    pub fn decode(&self, tokens: &[u32]) -> Result<String, EngineError> {
        let text: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|&t| t < self.special.eot)
            .collect();
        self.tokenizer
            .decode(&text, true)
            .map_err(|_| EngineError::internal("a Whisper token sequence could not be decoded"))
    }

    /// The id of language `code`'s token.
    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.special
            .languages
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, id)| *id)
    }

    /// The tokens Whisper never emits (OpenAI's `suppress_tokens="-1"`): the non-speech
    /// symbols (as `generation_config.json` lists them, or computed from the vocabulary when
    /// it does not) and the task tokens.
    pub fn suppressed(&self, listed: Option<&[u32]>) -> Vec<u32> {
        let s = &self.special;
        let mut out: Vec<u32> = match listed {
            Some(listed) => listed.to_vec(),
            None => self.non_speech_tokens(),
        };
        out.extend(
            [
                Some(s.sot),
                Some(s.sot_prev),
                s.transcribe,
                s.translate,
                s.sot_lm,
                s.no_speech,
            ]
            .into_iter()
            .flatten(),
        );
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Tokens that are only symbols a transcript of speech should not hold (brackets, music
    /// notes, ...), as OpenAI's tokenizer lists them: each symbol alone or after a space, when
    /// it is one token (or, for the music notes, the first token of its bytes).
    fn non_speech_tokens(&self) -> Vec<u32> {
        let mut symbols: Vec<String> = "\"#()*+/:;<=>@[\\]^_`{|}~「」『』"
            .chars()
            .map(String::from)
            .collect();
        symbols.extend(
            "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪"
                .split(' ')
                .map(String::from),
        );
        let music = "♩♪♫♬♭♮♯";
        symbols.extend(music.chars().map(String::from));
        let mut out = Vec::new();
        for first in [" -", " '"] {
            if let Some(&t) = self
                .encode(first)
                .ok()
                .and_then(|v| v.first().copied())
                .as_ref()
            {
                out.push(t);
            }
        }
        for symbol in &symbols {
            for text in [symbol.clone(), format!(" {symbol}")] {
                let Ok(tokens) = self.encode(&text) else {
                    continue;
                };
                let is_music = symbol.chars().all(|c| music.contains(c));
                if tokens.len() == 1 || (is_music && !tokens.is_empty()) {
                    out.push(tokens[0]);
                }
            }
        }
        out
    }
}
