"""Networks: plain `nn.Module` building blocks with no losses or training logic."""
