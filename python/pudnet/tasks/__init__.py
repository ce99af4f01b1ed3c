"""What a prediction is for: tasks (denoising; few-shot classification lives in model/losses.py and refine.py)."""
