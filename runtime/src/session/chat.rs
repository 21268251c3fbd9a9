//! Chat messages in, the assistant's reply out: the conversation is rendered with the
//! model's chat template (ChatML when the file has none) and only the part the session's
//! context does not already hold is run through the model.

use std::ops::ControlFlow;

use super::{GenerateParams, GenerateStats, Session};
use crate::chat::{input_bytes, ChatMessage, RenderLimits};
use crate::error::{Error, Result};
use crate::kv::Overflow;

impl Session {
    /// Most tokens a prompt may have when `used` tokens of the context stay (`usize::MAX`
    /// when the KV window slides and any length goes through).
    pub(crate) fn prompt_room(&self, used: usize) -> usize {
        if self.store().params().overflow == Overflow::Error {
            self.n_ctx().saturating_sub(used)
        } else {
            usize::MAX
        }
    }

    /// The token ids of `messages` rendered with the model's template, ending where the
    /// assistant's reply begins (special-token text becomes special tokens). The render is
    /// bounded ([`RenderLimits`]) and stops when the session is cancelled; a conversation
    /// that cannot fit in the context is an [`Error::ContextFull`] found without
    /// tokenizing all of it.
    pub fn chat_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(Error::invalid("a chat needs at least one message"));
        }
        let model = &self.model;
        if let Some(e) = model.chat_template_error() {
            return Err(Error::Template(format!(
                "the model's chat template does not parse, so chat is unavailable \
                 (plain prompts still work): {e}"
            )));
        }
        let Some(tmpl) = model.effective_chat_template() else {
            return Err(Error::Template(
                "the model has no chat template and its vocabulary has no ChatML tokens: it                  looks like a base model, so chat is unavailable (plain prompts work: use run)"
                    .into(),
            ));
        };
        let limits = RenderLimits::default().for_input(input_bytes(messages));
        let text = tmpl.render_limited(messages, true, &limits, Some(&self.cancel))?;
        // The rendered conversation is the whole context (a shared prefix is reused).
        let room = self.prompt_room(0);
        model.tokenizer().encode_bounded(&text, true, true, room)
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
        // Cleared here, not when generation starts, so a cancel also stops the render.
        self.cancel.reset();
        self.generated = 0;
        let ids = self.chat_tokens(messages)?;
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
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
        self.generate_uncleared(&ids[have..], params, on_piece)
    }
}
