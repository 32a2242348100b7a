//! Per-sequence KV caches, RoPE and causal attention over packed sequences, on plain `f32`
//! slices. A batch is several sequences' new tokens packed one after another; each sequence
//! attends only to its own cache, so sequences of different lengths share one forward pass with
//! no padding and no mask.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::config::{LlmConfig, RopeStyle};

/// One layer's keys and values for one sequence: rows of `kv_heads * head_dim`.
#[derive(Default)]
struct LayerCache {
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// The KV cache of one sequence, every layer.
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
}

impl KvCache {
    pub fn new(layers: usize) -> KvCache {
        KvCache {
            layers: (0..layers).map(|_| LayerCache::default()).collect(),
            len: 0,
        }
    }

    /// Tokens whose keys and values are cached.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Marks `n` more tokens as cached (after every layer has appended them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// A copy of the first `keep` tokens' keys and values (see `KvLen::fork`).
    pub(crate) fn fork(&self, keep: usize) -> KvCache {
        let keep = keep.min(self.len);
        let rows = |data: &[f32]| match self.len {
            0 => Vec::new(),
            len => data[..data.len() / len * keep].to_vec(),
        };
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|l| LayerCache {
                    keys: rows(&l.keys),
                    values: rows(&l.values),
                })
                .collect(),
            len: keep,
        }
    }
}

/// RoPE frequencies of a model. The cos/sin rows are computed per forward pass for the tokens
/// in it (shared by every layer), not tabled for the whole context: a 128k-context model would
/// otherwise hold tens of MiB of tables.
pub struct Rope {
    inv_freq: Vec<f64>,
    style: RopeStyle,
}

/// cos/sin of each packed token's position, one row of `pairs` per token.
pub struct RopeRows {
    cos: Vec<f32>,
    sin: Vec<f32>,
    pairs: usize,
    style: RopeStyle,
}

impl Rope {
    /// `inv_freq` overrides the config's frequencies (GGUF `rope_freqs` factors applied).
    pub fn new(config: &LlmConfig, inv_freq: &[f64]) -> Rope {
        Rope {
            inv_freq: inv_freq.to_vec(),
            style: config.rope_style,
        }
    }

    /// The rows for tokens at `positions`, in packed order.
    pub fn rows(&self, positions: impl Iterator<Item = usize>) -> RopeRows {
        let pairs = self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in positions {
            for f in &self.inv_freq {
                let angle = p as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeRows {
            cos,
            sin,
            pairs,
            style: self.style,
        }
    }
}

impl RopeRows {
    /// cos of every (token, pair), `pairs()` per token.
    pub fn cos(&self) -> &[f32] {
        &self.cos
    }

    pub fn sin(&self) -> &[f32] {
        &self.sin
    }

    /// Rotated pairs per head.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// Rotates every head of packed token `t`'s row in place.
    fn apply(&self, row: &mut [f32], head_dim: usize, t: usize) {
        let cos = &self.cos[t * self.pairs..(t + 1) * self.pairs];
        let sin = &self.sin[t * self.pairs..(t + 1) * self.pairs];
        for head in row.chunks_exact_mut(head_dim) {
            match self.style {
                RopeStyle::Half => {
                    let (a, b) = head.split_at_mut(self.pairs);
                    for i in 0..self.pairs {
                        let (x, y) = (a[i], b[i]);
                        a[i] = x * cos[i] - y * sin[i];
                        b[i] = x * sin[i] + y * cos[i];
                    }
                }
                RopeStyle::Interleaved => {
                    for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                        let (x, y) = (pair[0], pair[1]);
                        pair[0] = x * cos[i] - y * sin[i];
                        pair[1] = x * sin[i] + y * cos[i];
                    }
                }
            }
        }
    }
}

/// Head counts and sizes of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// The attention geometry of a model, its RoPE frequencies and its layer count.
pub struct Attention {
    pub shape: Heads,
    pub rope: Rope,
    pub layers: usize,
}

impl Attention {
    /// The RoPE rows of a pass of `spans[i]` tokens for the i-th cache, in packed order, at
    /// each sequence's next positions.
    pub fn pack(&self, spans: &[usize], caches: &[&mut KvCache]) -> RopeRows {
        let positions = caches
            .iter()
            .zip(spans)
            .flat_map(|(cache, &n)| cache.len..cache.len + n);
        self.rope.rows(positions)
    }

    /// One layer of attention for a packed batch. `q` is `[tokens, heads * head_dim]`, `k` and `v`
    /// `[tokens, kv_heads * head_dim]`. Applies RoPE (at each sequence's own positions), appends
    /// keys and values to the caches, and returns `[tokens, heads * head_dim]`. `rope` holds
    /// the rows of [`Attention::pack`].
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        layer: usize,
        q: &mut [f32],
        k: &mut [f32],
        v: &[f32],
        spans: &[usize],
        rope: &RopeRows,
        caches: &mut [&mut KvCache],
    ) -> Vec<f32> {
        let Heads {
            heads,
            kv_heads,
            head_dim,
        } = self.shape;
        let q_row = heads * head_dim;
        let kv_row = kv_heads * head_dim;
        let mut start = 0;
        for (cache, &n) in caches.iter_mut().zip(spans) {
            for t in start..start + n {
                rope.apply(&mut q[t * q_row..(t + 1) * q_row], head_dim, t);
                rope.apply(&mut k[t * kv_row..(t + 1) * kv_row], head_dim, t);
            }
            let cached = &mut cache.layers[layer];
            cached
                .keys
                .extend_from_slice(&k[start * kv_row..(start + n) * kv_row]);
            cached
                .values
                .extend_from_slice(&v[start * kv_row..(start + n) * kv_row]);
            start += n;
        }

        // One task per (sequence, head); each writes its own rows × head columns.
        let mut tasks = Vec::with_capacity(spans.len() * heads);
        let mut start = 0;
        for (s, &n) in spans.iter().enumerate() {
            for h in 0..heads {
                tasks.push((s, h, start, n));
            }
            start += n;
        }
        let group = heads / kv_heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let caches: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
        let q: &[f32] = q;
        // rayon, like the integer matmuls: one pool, and work-stealing copes with busy cores.
        let results: Vec<OnceLock<Vec<f32>>> = tasks.iter().map(|_| OnceLock::new()).collect();
        let run = |&(s, h, start, n): &(usize, usize, usize, usize)| {
            let cache = &caches[s].layers[layer];
            head(&HeadJob {
                keys: &cache.keys,
                values: &cache.values,
                kv_row,
                kv_offset: (h / group) * head_dim,
                head_dim,
                queries: &q[start * q_row + h * head_dim..],
                q_row,
                n,
                past: cache.keys.len() / kv_row - n,
                scale,
            })
        };
        (0..tasks.len()).into_par_iter().for_each(|i| {
            let _ = results[i].set(run(&tasks[i]));
        });
        let total: usize = spans.iter().sum();
        let mut out = vec![0f32; total * q_row];
        for (&(_, h, start, n), result) in tasks.iter().zip(results) {
            let result = result.into_inner().unwrap_or_default();
            for j in 0..n {
                out[(start + j) * q_row + h * head_dim..][..head_dim]
                    .copy_from_slice(&result[j * head_dim..(j + 1) * head_dim]);
            }
        }
        out
    }
}

/// One head of one sequence: its `n` new queries against its cache.
struct HeadJob<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    kv_row: usize,
    kv_offset: usize,
    head_dim: usize,
    /// Starts at the first query; rows `q_row` apart.
    queries: &'a [f32],
    q_row: usize,
    n: usize,
    /// Cached positions before the first new token.
    past: usize,
    scale: f32,
}

/// Causal softmax attention for one head, `[n, head_dim]` out.
fn head(job: &HeadJob) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: OnceLock<bool> = OnceLock::new();
        if *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
        {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            return unsafe { head_avx2(job) };
        }
    }
    head_body(job)
}

/// The same code compiled for AVX2 + FMA: the dot products and sums vectorise 8 wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_avx2(job: &HeadJob) -> Vec<f32> {
    head_body(job)
}

#[inline(always)]
fn head_body(job: &HeadJob) -> Vec<f32> {
    let d = job.head_dim;
    let mut out = vec![0f32; job.n * d];
    let mut scores = Vec::with_capacity(job.past + job.n);
    for j in 0..job.n {
        let query = &job.queries[j * job.q_row..][..d];
        let visible = job.past + j + 1;
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for p in 0..visible {
            let key = &job.keys[p * job.kv_row + job.kv_offset..][..d];
            let score = dot(query, key) * job.scale;
            max = max.max(score);
            scores.push(score);
        }
        let mut sum = 0f32;
        for score in scores.iter_mut() {
            *score = (*score - max).exp();
            sum += *score;
        }
        let acc = &mut out[j * d..(j + 1) * d];
        for (p, weight) in scores.iter().enumerate() {
            let value = &job.values[p * job.kv_row + job.kv_offset..][..d];
            let w = weight / sum;
            for (a, x) in acc.iter_mut().zip(value) {
                *a += w * x;
            }
        }
    }
    out
}

/// A dot product with eight independent accumulators, which the compiler vectorises.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (x, y) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks..a.len() {
        sum += a[i] * b[i];
    }
    sum
}
