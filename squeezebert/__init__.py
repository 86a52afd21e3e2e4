"""SqueezeBERT (Iandola et al., 2020) reproduction."""
