"""Inference over one model: context prefill, multiple-choice scoring, sampling."""
