//! The CPU backend of the [decoder](super::decoder): matrices on our integer kernels where the
//! CPU and format allow, else candle's ([`Matrix`]); an `f32` embedding table; attention on
//! plain `f32` row caches ([`super::attention`]).

use candle_core::{Device, Tensor};

use super::attention::{self, Attention, Heads, KvCache, Rope};
use super::config::LlmConfig;
use super::decoder::{rope_inv_freq, AttentionBackend, Backend, KvLen};
use super::linear::Fused;
use super::weights::{Matrix, WeightSource};
use crate::error::EngineError;

pub struct CpuBackend {
    embed: Tensor,
    attention: Attention,
}

impl CpuBackend {
    /// Reads the embedding table and the RoPE frequencies.
    pub(super) fn load(
        config: &LlmConfig,
        w: &mut dyn WeightSource,
    ) -> Result<CpuBackend, EngineError> {
        let inv_freq = rope_inv_freq(config, w)?;
        Ok(CpuBackend {
            embed: w.dense("token_embd.weight")?,
            attention: Attention {
                shape: Heads {
                    heads: config.heads,
                    kv_heads: config.kv_heads,
                    head_dim: config.head_dim,
                },
                rope: Rope::new(config, &inv_freq),
                layers: config.layers,
            },
        })
    }
}

impl Backend for CpuBackend {
    type Linear = Matrix;
    type Attention = Attention;

    fn vector(&self, w: &mut dyn WeightSource, name: &str) -> Result<Tensor, EngineError> {
        w.dense(name)
    }

    fn matrix(&self, w: &mut dyn WeightSource, name: &str) -> Result<Matrix, EngineError> {
        w.matrix(name)
    }

    fn fused(
        &self,
        w: &mut dyn WeightSource,
        names: &[String],
    ) -> Result<Fused<Matrix>, EngineError> {
        let parts = names
            .iter()
            .map(|n| w.matrix(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Fused::new(parts))
    }

    fn lm_head(&self, w: &mut dyn WeightSource) -> Result<Matrix, EngineError> {
        if w.has("output.weight") {
            w.matrix("output.weight")
        } else {
            w.matrix("token_embd.weight")
        }
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor, EngineError> {
        let ids = Tensor::new(tokens, self.embed.device())?;
        Ok(self.embed.index_select(&ids, 0)?)
    }

    fn attention(&self) -> &Attention {
        &self.attention
    }
}

impl KvLen for KvCache {
    fn len(&self) -> usize {
        KvCache::len(self)
    }

    fn advance(&mut self, n: usize) {
        KvCache::advance(self, n);
    }

    fn fork(&self, keep: usize) -> Result<KvCache, EngineError> {
        Ok(KvCache::fork(self, keep))
    }
}

impl AttentionBackend for Attention {
    type Cache = KvCache;
    type Pass = attention::RopeRows;

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers)
    }

    fn begin(&self, spans: &[usize], caches: &[&mut KvCache]) -> Result<Self::Pass, EngineError> {
        Ok(self.pack(spans, caches))
    }

    fn attend(
        &self,
        layer: usize,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        spans: &[usize],
        pass: &Self::Pass,
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor, EngineError> {
        let n = q.dim(0)?;
        let mut q = q.flatten_all()?.to_vec1::<f32>()?;
        let mut k = k.flatten_all()?.to_vec1::<f32>()?;
        let v = v.flatten_all()?.to_vec1::<f32>()?;
        let mixed = Attention::attend(self, layer, &mut q, &mut k, &v, spans, pass, caches);
        let width = self.shape.heads * self.shape.head_dim;
        Ok(Tensor::from_vec(mixed, (n, width), &Device::Cpu)?)
    }
}
