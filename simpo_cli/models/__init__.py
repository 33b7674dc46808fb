"""Models: loading causal LMs and tokenizers (hub, local, tiny builders), reward models, sampling."""
