"""PudNet: predict the weights of a ConvNet for an unseen image dataset in one forward pass."""
