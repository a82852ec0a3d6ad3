//! Token estimates for prompts and the words of simulated replies.

/// Tokens added per chat message for the role and the template markers.
pub(crate) const TOKENS_PER_MESSAGE: usize = 4;

/// Estimates the prompt tokens of chat messages from their text contents.
///
/// Each message counts `ceil(chars / 4)` tokens for its content plus
/// [`TOKENS_PER_MESSAGE`] for the role and template markers. Four
/// characters per token is a common rule of thumb for English text, not the
/// output of the model's tokenizer. The result is at least 1.
pub(crate) fn estimate_prompt_tokens<'a>(contents: impl IntoIterator<Item = &'a str>) -> usize {
    contents
        .into_iter()
        .map(|content| content.chars().count().div_ceil(4) + TOKENS_PER_MESSAGE)
        .sum::<usize>()
        .max(1)
}

/// Returns the forced reply when the last user message contains "Reply with only: X".
///
/// X runs to the end of that line, without surrounding whitespace and
/// without one pair of matching quotes.
pub(crate) fn forced_reply(last_user_message: &str) -> Option<String> {
    const MARKER: &str = "Reply with only:";
    let start = last_user_message.find(MARKER)? + MARKER.len();
    let rest = &last_user_message[start..];
    let line = rest.lines().next().unwrap_or("").trim();
    let unquoted = ["\"", "'", "`"]
        .iter()
        .find_map(|quote| {
            line.strip_prefix(quote)
                .and_then(|inner| inner.strip_suffix(quote))
        })
        .unwrap_or(line)
        .trim();
    (!unquoted.is_empty()).then(|| unquoted.to_string())
}

/// Filler text of simulated replies, one word per token.
const FILLER: &[&str] = &[
    "Batching",
    "lets",
    "the",
    "GPU",
    "read",
    "the",
    "model",
    "weights",
    "once",
    "per",
    "step",
    "and",
    "reuse",
    "them",
    "for",
    "every",
    "sequence",
    "in",
    "the",
    "batch,",
    "so",
    "throughput",
    "grows",
    "almost",
    "linearly",
    "with",
    "batch",
    "size",
    "until",
    "the",
    "step",
    "becomes",
    "compute",
    "bound.",
    "After",
    "that",
    "point,",
    "extra",
    "requests",
    "mostly",
    "wait",
    "in",
    "the",
    "queue,",
    "and",
    "latency",
    "rises",
    "while",
    "throughput",
    "stays",
    "flat.",
];

/// Returns the word of a filler reply at token `index`, with a leading space after the first token.
pub(crate) fn filler_token(index: usize) -> String {
    let word = FILLER[index % FILLER.len()];
    if index == 0 {
        word.to_string()
    } else {
        format!(" {word}")
    }
}

/// Splits a forced reply into one piece per token, so that concatenating
/// the pieces gives the reply back.
pub(crate) fn forced_tokens(reply: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for character in reply.chars() {
        if character.is_whitespace() && !current.trim().is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
        current.push(character);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_estimate_counts_chars_and_messages() {
        assert_eq!(estimate_prompt_tokens(["abcd"]), 1 + TOKENS_PER_MESSAGE);
        assert_eq!(
            estimate_prompt_tokens(["abcde", ""]),
            2 + 2 * TOKENS_PER_MESSAGE
        );
        assert_eq!(estimate_prompt_tokens([]), 1);
    }

    #[test]
    fn forced_reply_takes_rest_of_line() {
        assert_eq!(
            forced_reply("Say hi. Reply with only: OK").as_deref(),
            Some("OK")
        );
        assert_eq!(
            forced_reply("Reply with only: \"yes please\"\nthanks").as_deref(),
            Some("yes please")
        );
        assert_eq!(forced_reply("Reply with only:   "), None);
        assert_eq!(forced_reply("Tell me a story"), None);
    }

    #[test]
    fn forced_tokens_concatenate_to_reply() {
        let tokens = forced_tokens("the quick  brown fox");
        assert_eq!(tokens, vec!["the", " quick", "  brown", " fox"]);
        assert_eq!(tokens.concat(), "the quick  brown fox");
        assert_eq!(forced_tokens("OK"), vec!["OK"]);
    }

    #[test]
    fn filler_tokens_form_words() {
        let text: String = (0..4).map(filler_token).collect();
        assert_eq!(text, "Batching lets the GPU");
    }
}
