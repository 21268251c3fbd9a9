//! Chat messages in, the assistant's reply out: the conversation is rendered with the
//! model's chat template (ChatML when the file has none) and only the part the session's
//! context does not already hold is run through the model.

use std::ops::ControlFlow;

use super::{GenerateParams, GenerateStats, Session};
use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{Error, Result};

impl Session {
    /// The token ids of `messages` rendered with the model's template, ending where the
    /// assistant's reply begins (special-token text becomes special tokens).
    pub fn chat_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(Error::invalid("a chat needs at least one message"));
        }
        let model = &self.model;
        let fallback;
        let tmpl = match model.chat_template() {
            Some(t) => t,
            None => {
                fallback = ChatTemplate::chatml();
                &fallback
            }
        };
        let text = tmpl.render(messages, true)?;
        model.tokenizer().encode(&text, true, true)
    }

    /// Generate the assistant's reply to a conversation. Pass the whole conversation each
    /// turn (earlier replies included): the longest prefix the context already holds is
    /// kept, the rest of the context is dropped, and only the new tokens are evaluated.
    /// `params.add_special` / `parse_special` are not used (the template decides).
    ///
    /// ```no_run
    /// # use std::{ops::ControlFlow, sync::Arc};
    /// # use suanpan::{chat::ChatMessage, GenerateParams, Model, ModelParams, SessionParams};
    /// # let model = Arc::new(Model::load("model.gguf", &ModelParams::default())?);
    /// let mut s = model.session(&SessionParams::default())?;
    /// let mut msgs = vec![ChatMessage::user("What is 2+2?")];
    /// let mut reply = String::new();
    /// s.chat(&msgs, &GenerateParams::default(), |p| { reply.push_str(p); ControlFlow::Continue(()) })?;
    /// msgs.push(ChatMessage::assistant(reply));
    /// # Ok::<(), suanpan::Error>(())
    /// ```
    pub fn chat(
        &mut self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerateStats> {
        let ids = self.chat_tokens(messages)?;
        let ctx = self.context_tokens();
        let mut keep = ctx.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        if keep == ids.len() {
            keep -= 1; // at least one token must go through the model to give logits
        }
        if self.truncate(keep).is_err() {
            // A quantized or slid cache cannot be cut: the messages hold the whole
            // conversation, so run them again from an empty context.
            self.reset();
        }
        let have = self.context_tokens().len();
        self.generate_tokens(&ids[have..], params, on_piece)
    }
}
