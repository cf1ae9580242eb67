"""Loss functions of the podium recipes that MONAI lacks or that combine MONAI losses."""
