"""Evaluation of generated adapters against controls (`code2lora eval --checkpoint C --repos ...`)."""
