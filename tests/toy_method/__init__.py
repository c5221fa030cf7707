"""A toy distillation method, as a user would add one: this package plus one registry line.

It pulls each class's synthetic mean towards the mean of a few real images of that class.
"""
