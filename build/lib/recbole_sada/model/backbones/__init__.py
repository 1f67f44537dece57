"""Backbones: RecBole's SASRec, GRU4Rec, NextItNet, BERT4Rec with the plugin hooks, and FMLPRec."""
