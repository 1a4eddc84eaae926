import torch

from utils.logger import TrainingLogger, write_training_images


class Recorder:
    def __init__(self):
        self.scalars, self.images = {}, {}

    def add_scalar(self, name, value, step):
        self.scalars[name] = (value, step)

    def add_image(self, name, image, step):
        self.images[name] = image


def test_logger_means_metrics_and_skips(capsys):
    writer = Recorder()
    log = TrainingLogger(total_steps=4, samples_per_step=2, device=torch.device("cpu"), print_freq=2, writer=writer)
    gt = torch.full((2, 1, 4, 4), 10.0)
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    pred = torch.zeros(2, 2, 4, 4)
    pred[:, 0] = 10.5  # error 0.5 px everywhere
    log.update({"sequence": torch.tensor(2.0)}, pred, gt, valid, torch.tensor(1.0), 0.01, skipped=False)
    log.update({"sequence": torch.tensor(4.0)}, pred, gt, valid, torch.tensor(3.0), 0.03, skipped=False)
    assert log.should_log(2) and not log.should_log(3) and log.should_log(4)
    values = log.log(2, lr=1e-4)
    assert values["sequence"] == 3.0 and values["grad_norm"] == 2.0
    assert values["mae"] == 0.5 and values["1px"] == 1.0 and values["3px"] == 1.0
    assert abs(values["data_time"] - 0.02) < 1e-9 and values["skipped"] == 0
    line = capsys.readouterr().out
    assert line.startswith("[2/4]  loss 3.0000") and "lr 1.000e-04" in line and "eta" in line and "MiB" in line
    assert writer.scalars["train/loss"] == (3.0, 2) and writer.scalars["train/mae"] == (0.5, 2)

    log.update({"sequence": torch.tensor(float("nan"))}, pred, gt, valid, None, 0.0, skipped=True)
    log.update({"sequence": torch.tensor(1.0)}, pred, gt, valid, torch.tensor(1.0), 0.0, skipped=False)
    values = log.log(4, lr=1e-5)
    assert values["sequence"] == 1.0 and values["skipped"] == 1
    assert "skipped 1 non-finite (1 in total)" in capsys.readouterr().out


def test_training_images():
    writer = Recorder()
    left = torch.rand(1, 3, 8, 12) * 2 - 1
    disp = torch.rand(1, 1, 8, 12) * 5
    preds = [torch.rand(1, 2, 8, 12) for _ in range(3)]
    valid = torch.ones(1, 8, 12, dtype=torch.bool)
    write_training_images(writer, 1, left, left, disp, valid, preds, [0.5] * 3, [0.5] * 3)
    assert writer.images["predictions"].shape == (3, 2 * 8 + 3 * 2, 2 * 12 + 3 * 2)
    assert writer.images["sequence"].shape == (3, 8 + 2 * 2, 3 * 12 + 4 * 2)
    assert 0 <= writer.images["predictions"].min() and writer.images["predictions"].max() <= 1
