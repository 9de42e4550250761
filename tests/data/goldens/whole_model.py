"""A whole-model candidate (run_model only): gptoss_model's full model, the end-to-end hidden states and logits."""

import torch


class WholeModel:
    name = "whole-model gptoss_model"

    def setup(self, context):
        from gptoss_convert import load_model

        self.model = load_model(context.checkpoint_dir, dtype=context.dtype, device=context.device)

    def run_model(self, token_ids):
        with torch.no_grad():
            hidden, states = self.model.model(token_ids, output_hidden_states=True)
            return {"hidden_states": states, "logits": self.model.lm_head(hidden)}


CANDIDATE = WholeModel()
