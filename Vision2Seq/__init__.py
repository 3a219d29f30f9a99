"""Image-to-text models (BLIP, ...): what they share with Seq2Seq, plus the vision side."""
