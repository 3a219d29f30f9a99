"""Image-to-text models (BLIP, ...): the demo-style names of NNDF/kinds/image_to_text/."""
