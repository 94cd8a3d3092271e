import subprocess

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self) -> str:
        return subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
