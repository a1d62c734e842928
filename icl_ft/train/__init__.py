"""Finetuning: optimizer, jitted train step, the training loop, metrics.

    from icl_ft.train import loop
    result = loop.train(config)        # config from configs/train.py
"""
