"""The chat loop without a UI: commands, model loading, prompt building and the writing of answers."""
