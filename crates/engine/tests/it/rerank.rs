use xi_engine::{CrossEncoder, Rerank};

use xi_testkit::build_cross_encoder;

use crate::support::fixture;

#[test]
fn cross_encoder_scores_match_pytorch() {
    let f = fixture("minilm_cross_encoder.json");
    let dir = tempfile::TempDir::new().unwrap();
    build_cross_encoder(dir.path());
    let model = CrossEncoder::load(dir.path()).unwrap();
    let pairs: Vec<_> = f["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            model
                .tokenize_pair(p[0].as_str().unwrap(), p[1].as_str().unwrap(), true)
                .unwrap()
        })
        .collect();
    assert!(pairs.iter().all(|p| p.len() <= 512));
    assert_eq!(
        pairs[4].len(),
        512,
        "the over-long pair is truncated at the tokenizer's 512"
    );
    assert!(
        pairs[0].type_ids.contains(&1),
        "the document half has token type 1"
    );
    let refs: Vec<_> = pairs.iter().collect();
    let scores = model.score(&refs).unwrap();
    for (i, (got, want)) in scores
        .iter()
        .zip(f["scores"].as_array().unwrap())
        .enumerate()
    {
        let diff = (f64::from(*got) - want.as_f64().unwrap()).abs();
        assert!(diff <= 1e-5, "pair {i}: {got} vs {want}");
    }
}
