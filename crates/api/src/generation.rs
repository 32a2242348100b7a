//! Generation requests: the sampling fields that `/v1/chat/completions` and `/v1/completions`
//! share, parsed and checked once ([`SamplingFields::sampling`], a 400 naming the field) into
//! [`Sampling`], which crosses to the worker as it is. A field the request leaves out stays
//! `None` there; its default is here, and only here (the constants below, read by the worker when
//! it starts the sequence): the API's defaults, OpenAI's (docs/llm.md's table).

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::guide::Guide;
use crate::guide::{guide_of, GuideFields};

/// Generated tokens at most when the request gives no `max_tokens` (capped by the context).
pub const DEFAULT_MAX_TOKENS: usize = 1024;
/// OpenAI's default temperature (0 is greedy).
pub const DEFAULT_TEMPERATURE: f64 = 1.0;
/// No repetition penalty.
pub const DEFAULT_REPETITION_PENALTY: f32 = 1.0;
/// No presence penalty.
pub const DEFAULT_PRESENCE_PENALTY: f32 = 0.0;
/// No frequency penalty.
pub const DEFAULT_FREQUENCY_PENALTY: f32 = 0.0;
/// The most alternatives per token `top_logprobs` (and completions' `logprobs`) may ask for
/// (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: i64 = 20;
/// The most choices one request may ask for (`n`): each is a sequence in the replica's batch.
pub const MAX_CHOICES: i64 = 16;

/// Sampling and stopping; `None` means the default above (`top_p`, `top_k`: no cut; `seed`: a
/// fresh one per request).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sampling {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past the model's end tokens (vLLM's `ignore_eos`).
    #[serde(default)]
    pub ignore_eos: bool,
    /// What the answer must be (structured output), if the request constrains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guide: Option<Guide>,
    /// Report each generated token's log probability and this many most likely alternatives
    /// (`None`: no log probabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<usize>,
    /// Choices to generate from the one prompt (`n`); `None` is 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
}

impl Sampling {
    /// `max_tokens`, or [`DEFAULT_MAX_TOKENS`].
    pub fn max_tokens(&self) -> usize {
        self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)
    }

    /// `temperature`, or [`DEFAULT_TEMPERATURE`].
    pub fn temperature(&self) -> f64 {
        self.temperature.unwrap_or(DEFAULT_TEMPERATURE)
    }

    /// `top_p` when it cuts anything (below 1).
    pub fn top_p(&self) -> Option<f64> {
        self.top_p.filter(|p| *p < 1.0)
    }

    /// `top_k` when it cuts anything (above 0).
    pub fn top_k(&self) -> Option<usize> {
        self.top_k.filter(|k| *k > 0)
    }

    /// `repetition_penalty`, or [`DEFAULT_REPETITION_PENALTY`].
    pub fn repetition_penalty(&self) -> f32 {
        self.repetition_penalty
            .unwrap_or(DEFAULT_REPETITION_PENALTY)
    }

    /// `presence_penalty`, or [`DEFAULT_PRESENCE_PENALTY`].
    pub fn presence_penalty(&self) -> f32 {
        self.presence_penalty.unwrap_or(DEFAULT_PRESENCE_PENALTY)
    }

    /// `n`: how many choices (1 unless asked).
    pub fn choices(&self) -> usize {
        self.n.unwrap_or(1).max(1)
    }

    /// `frequency_penalty`, or [`DEFAULT_FREQUENCY_PENALTY`].
    pub fn frequency_penalty(&self) -> f32 {
        self.frequency_penalty.unwrap_or(DEFAULT_FREQUENCY_PENALTY)
    }
}

/// The sampling fields of a chat or completion body, as a client sends them.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct SamplingFields {
    #[serde(default)]
    pub stream: bool,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<Value>,
    #[serde(default)]
    pub stop_token_ids: Option<Vec<u32>>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// Choices per request, 1 to [`MAX_CHOICES`].
    pub n: Option<i64>,
    /// Completions' server-side best-of sampling: only 1.
    pub best_of: Option<i64>,
    /// Chat: `true` for log probabilities; completions: the number of alternatives.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Chat: alternatives per token (0 to 20), with `logprobs: true`.
    pub top_logprobs: Option<i64>,
    /// `response_format` and the `guided_*` fields.
    #[serde(flatten)]
    pub guide: GuideFields,
}

impl SamplingFields {
    /// The checked [`Sampling`]; the error is the 400's detail, naming the field.
    pub fn sampling(&self) -> Result<Sampling, String> {
        let stop_error = || "stop must be a string or a list of strings".to_string();
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(String::from).ok_or_else(stop_error))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(stop_error()),
        };
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(format!("temperature must be between 0 and 2, got {t}"));
            }
        }
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if value.is_some_and(|v| !(-2.0..=2.0).contains(&v)) {
                return Err(format!("{name} must be between -2 and 2"));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("top_p must be in (0, 1], got {p}"));
            }
        }
        if let Some(n) = self.n.filter(|n| !(1..=MAX_CHOICES).contains(n)) {
            return Err(format!("n must be between 1 and {MAX_CHOICES}, got {n}"));
        }
        if let Some(v) = self.best_of.filter(|v| *v != 1 && Some(*v) != self.n) {
            return Err(format!(
                "best_of = {v} is not supported: this server returns every choice it generates (best_of = n)"
            ));
        }
        let logprobs = self.logprobs()?;
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        if let Some(n) = max_tokens.filter(|n| *n < 1) {
            return Err(format!("max_tokens must be at least 1, got {n}"));
        }
        Ok(Sampling {
            max_tokens: max_tokens.map(|n| n as usize),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k.filter(|k| *k > 0).map(|k| k as usize),
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            stop,
            stop_token_ids: self.stop_token_ids.clone().unwrap_or_default(),
            ignore_eos: self.ignore_eos.unwrap_or(false),
            guide: guide_of(&self.guide)?,
            logprobs,
            n: self.n.filter(|n| *n > 1).map(|n| n as usize),
        })
    }

    /// Chat's `logprobs: true` with `top_logprobs: k`, or completions' `logprobs: k`: `Some(k)`.
    fn logprobs(&self) -> Result<Option<usize>, String> {
        let range = |name: &str, k: i64| {
            if (0..=MAX_TOP_LOGPROBS).contains(&k) {
                Ok(k as usize)
            } else {
                Err(format!(
                    "{name} must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"
                ))
            }
        };
        let asked = match &self.logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(0),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(k) => Some(range("logprobs", k)?),
                None => return Err(format!("logprobs must be true, false or a count, got {n}")),
            },
            Some(other) => {
                return Err(format!(
                    "logprobs must be true, false or a count, got {other}"
                ))
            }
        };
        match (asked, self.top_logprobs) {
            (_, None) => Ok(asked),
            (Some(_), Some(k)) => Ok(Some(range("top_logprobs", k)?)),
            (None, Some(_)) => Err("top_logprobs needs logprobs: true".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(body: Value) -> SamplingFields {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_request_without_sampling_fields_gets_the_api_defaults() {
        let sampling = fields(json!({})).sampling().unwrap();
        assert_eq!(sampling, Sampling::default());
        assert_eq!(sampling.max_tokens(), 1024);
        assert_eq!(sampling.temperature(), 1.0);
        assert_eq!((sampling.top_p(), sampling.top_k()), (None, None));
        assert_eq!(sampling.repetition_penalty(), 1.0);
        assert_eq!(sampling.presence_penalty(), 0.0);
        assert_eq!(sampling.frequency_penalty(), 0.0);
        assert!(!sampling.ignore_eos && sampling.seed.is_none());
    }

    #[test]
    fn given_fields_win_and_no_op_cuts_are_dropped() {
        let sampling = fields(json!({
            "max_tokens": 9, "max_completion_tokens": 7, "temperature": 0, "top_p": 1.0,
            "top_k": 0, "stop": "x", "seed": 3, "n": 1,
        }))
        .sampling()
        .unwrap();
        assert_eq!(sampling.max_tokens(), 7, "max_completion_tokens wins");
        assert_eq!(sampling.temperature(), 0.0);
        assert_eq!((sampling.top_p(), sampling.top_k()), (None, None));
        assert_eq!(sampling.stop, ["x"]);
        assert_eq!(sampling.seed, Some(3));
    }

    #[test]
    fn every_bad_value_is_refused_naming_its_field() {
        for (body, message) in [
            (
                json!({"temperature": 2.5}),
                "temperature must be between 0 and 2, got 2.5",
            ),
            (json!({"top_p": 0}), "top_p must be in (0, 1], got 0"),
            (
                json!({"presence_penalty": 3}),
                "presence_penalty must be between -2 and 2",
            ),
            (
                json!({"frequency_penalty": -3}),
                "frequency_penalty must be between -2 and 2",
            ),
            (
                json!({"max_tokens": 0}),
                "max_tokens must be at least 1, got 0",
            ),
            (
                json!({"stop": 5}),
                "stop must be a string or a list of strings",
            ),
            (
                json!({"stop": ["a", 1]}),
                "stop must be a string or a list of strings",
            ),
        ] {
            assert_eq!(
                fields(body.clone()).sampling().unwrap_err(),
                message,
                "{body}"
            );
        }
        for n in [0, 17, -1] {
            let err = fields(json!({ "n": n })).sampling().unwrap_err();
            assert_eq!(err, format!("n must be between 1 and 16, got {n}"));
        }
        let err = fields(json!({"best_of": 3})).sampling().unwrap_err();
        assert!(err.starts_with("best_of = 3 is not supported"), "{err}");
        let sampling = fields(json!({"n": 3, "best_of": 3})).sampling().unwrap();
        assert_eq!(sampling.choices(), 3, "best_of = n is n");
        for (body, message) in [
            (
                json!({"logprobs": "yes"}),
                "logprobs must be true, false or a count, got \"yes\"",
            ),
            (
                json!({"logprobs": 21}),
                "logprobs must be between 0 and 20, got 21",
            ),
            (
                json!({"logprobs": true, "top_logprobs": -1}),
                "top_logprobs must be between 0 and 20, got -1",
            ),
            (
                json!({"top_logprobs": 2}),
                "top_logprobs needs logprobs: true",
            ),
        ] {
            assert_eq!(
                fields(body.clone()).sampling().unwrap_err(),
                message,
                "{body}"
            );
        }
    }

    #[test]
    fn logprobs_read_as_chat_and_completions_send_them() {
        let logprobs = |body: Value| fields(body).sampling().unwrap().logprobs;
        assert_eq!(logprobs(json!({})), None);
        assert_eq!(logprobs(json!({"logprobs": false})), None);
        assert_eq!(logprobs(json!({"logprobs": true})), Some(0));
        assert_eq!(
            logprobs(json!({"logprobs": true, "top_logprobs": 5})),
            Some(5)
        );
        assert_eq!(
            logprobs(json!({"logprobs": 3})),
            Some(3),
            "completions' count"
        );
        assert_eq!(logprobs(json!({"logprobs": 0})), Some(0));
    }
}
