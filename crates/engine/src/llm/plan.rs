//! The step planner: which sequences advance in the next forward pass, and by how many tokens.
//! A pure function of what each sequence still has to compute and the pass's token budget, kept
//! apart from the model code (mistral.rs keeps its `scheduler/` apart from `pipeline/` alike).

/// Tokens each sequence computes in the next pass, in order, given `pending[i]` (the tokens
/// sequence `i` still has to compute; 0 for a finished one) and `budget` (tokens per pass).
///
/// Decoding sequences (one token pending) go first, one token each, whatever the budget: a
/// long prompt never stalls them. Then prompts, in order, each in a chunk of at most what is
/// left of the budget (chunked prefill). A pass with nothing else in it always takes at least
/// one prompt token, so a zero budget still makes progress.
pub(super) fn plan(pending: &[usize], budget: usize) -> Vec<usize> {
    let mut take = vec![0usize; pending.len()];
    let mut used = 0;
    for (i, &p) in pending.iter().enumerate() {
        if p == 1 {
            take[i] = 1;
            used += 1;
        }
    }
    for (i, &p) in pending.iter().enumerate() {
        if p > 1 {
            let room = budget.saturating_sub(used);
            let room = if used == 0 { room.max(1) } else { room };
            take[i] = p.min(room);
            used += take[i];
        }
    }
    take
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn decoding_sequences_take_one_token_each() {
        assert_eq!(plan(&[1, 1, 1], 512), [1, 1, 1]);
    }

    #[test]
    fn finished_sequences_take_nothing() {
        assert_eq!(plan(&[0, 1, 0, 7], 512), [0, 1, 0, 7]);
        assert_eq!(plan(&[0, 0], 512), [0, 0]);
        assert_eq!(plan(&[], 512), Vec::<usize>::new());
    }

    #[test]
    fn a_prompt_that_fits_is_read_whole() {
        assert_eq!(plan(&[100], 512), [100]);
        assert_eq!(plan(&[512], 512), [512]);
    }

    #[test]
    fn a_long_prompt_is_read_in_chunks_of_the_budget() {
        assert_eq!(plan(&[1300], 512), [512]);
        assert_eq!(plan(&[788], 512), [512]);
        assert_eq!(plan(&[276], 512), [276]);
    }

    #[test]
    fn decoding_goes_first_and_prompts_share_what_is_left() {
        // Two decoding sequences use 2 of 8; the first prompt gets 6, the second none.
        assert_eq!(plan(&[10, 1, 20, 1], 8), [6, 1, 0, 1]);
        // Prompts in order: the first is read whole, the second gets the rest.
        assert_eq!(plan(&[3, 10, 1], 8), [3, 4, 1]);
    }

    #[test]
    fn decoding_sequences_are_never_held_back_by_the_budget() {
        assert_eq!(plan(&[1, 1, 1, 5], 2), [1, 1, 1, 0]);
        assert_eq!(plan(&[1, 1], 0), [1, 1]);
    }

    #[test]
    fn a_pass_always_makes_progress() {
        // A zero budget with nothing decoding still reads one prompt token.
        assert_eq!(plan(&[5], 0), [1]);
        assert_eq!(plan(&[5, 5], 0), [1, 0]);
        // Once something runs, a spent budget gives prompts nothing.
        assert_eq!(plan(&[1, 5], 1), [1, 0]);
    }
}
